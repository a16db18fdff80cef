"""Checkpoints: load and save a model with its tokenizer in Meta's, Hugging Face's or herd's format.

`load` also takes a preset name or a Hugging Face Hub id; `convert` and `info` back `herd convert` / `herd info`.
"""

from herd.checkpoint.loading import convert, detect_format, info, load, load_shard, save

__all__ = ["convert", "detect_format", "info", "load", "load_shard", "save"]
