"""Serving: a continuous-batching engine on a paged KV cache, and an OpenAI-compatible server with a web chat.

`Engine` works on token ids and is stepped by one thread; `serve` runs the HTTP server (`herd serve`).
"""

from herd.serve.config import EngineConfig
from herd.serve.engine import Engine
from herd.serve.request import RequestParams, StepOutput

__all__ = ["Engine", "EngineConfig", "RequestParams", "StepOutput"]
