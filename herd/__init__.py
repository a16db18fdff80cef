"""herd: the whole Llama 3 system, PyTorch-native.

The public interface: `load`, `save`, `generate` (their modules imported on first use, so `import herd` stays
light for worker processes that need only herd.data); the pieces live in herd.model, herd.tokenizer,
herd.checkpoint, herd.generation, herd.train and herd.data.
"""

from herd.errors import HerdError

__all__ = ["HerdError", "generate", "load", "save"]
__version__ = "0.1.0"

_TOOL_OPTIONS = frozenset({"max_new_tokens", "temperature", "top_p", "top_k", "seed"})


def generate(model, tok, prompts, *, tools=None, max_tool_rounds=3, on_text=None, on_tool_call=None, **options):  # noqa
    """`herd.generation.generate`'s text for each prompt; with `tools` (names from herd.eval.tool_use.TOOLS:
    "python", "calculator", "wolfram_alpha"), each prompt is a user turn answered through the tool loop: the
    model's calls run (at most `max_tool_rounds` rounds) and the text is its final answer. `on_tool_call(index,
    exchange)` gets each executed call and its result (`exchange.call`, `exchange.result`); with tools, options
    are max_new_tokens (per generation), temperature, top_p, top_k and seed."""
    from herd.generation import generate as generate_text

    if tools is None:
        return generate_text(model, tok, prompts, on_text=on_text, **options)
    from herd.eval.tool_use import chat_with_tools

    unsupported = sorted(set(options) - _TOOL_OPTIONS)
    if unsupported:
        raise HerdError(f"{unsupported[0]} is not an option with tools; use {', '.join(sorted(_TOOL_OPTIONS))}")
    texts = [prompts] if isinstance(prompts, str) else list(prompts)
    replies = chat_with_tools(model, tok, [[{"role": "user", "content": t}] for t in texts], tools,
                              max_rounds=max_tool_rounds, on_text=on_text, on_call=on_tool_call, **options)
    answers = [reply.text for reply in replies]
    return answers[0] if isinstance(prompts, str) else answers


def __getattr__(name: str):  # noqa: ANN202 - module attributes resolved lazily
    if name in ("load", "save"):
        from herd import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module 'herd' has no attribute {name!r}")
