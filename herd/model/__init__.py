"""The Llama 3 model: configs, presets, the transformer and its KV cache."""

from herd.model.config import ModelConfig, RopeScaling
from herd.model.kv_cache import KVCache
from herd.model.presets import PRESETS, preset
from herd.model.transformer import Transformer, build_model

__all__ = ["PRESETS", "KVCache", "ModelConfig", "RopeScaling", "Transformer", "build_model", "preset"]
