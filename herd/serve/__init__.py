"""Serving: a continuous-batching engine on a paged KV cache, and an OpenAI-compatible server with a web chat.

`Engine` works on token ids and is stepped by one thread; `serve` runs the HTTP server (`herd serve`).
"""

from herd.serve.engine import Engine
from herd.serve.request import RequestParams, StepOutput
from herd.serve.scheduler import EngineConfig

__all__ = ["Engine", "EngineConfig", "RequestParams", "StepOutput"]
