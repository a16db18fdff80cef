"""herd: the whole Llama 3 system, PyTorch-native.

The public interface: `load`, `save`, `generate` (imported on first use, so `import herd` stays light
for worker processes that need only herd.data); the pieces live in herd.model, herd.tokenizer,
herd.checkpoint, herd.generation, herd.train and herd.data.
"""

from herd.errors import HerdError

__all__ = ["HerdError", "generate", "load", "save"]
__version__ = "0.1.0"


def __getattr__(name: str):  # noqa: ANN202 - module attributes resolved lazily
    if name in ("load", "save"):
        from herd import checkpoint

        return getattr(checkpoint, name)
    if name == "generate":
        from herd.generation import generate

        return generate
    raise AttributeError(f"module 'herd' has no attribute {name!r}")
