"""Generate-until requests: continue token-id prompts until a stop string, a stop token or max_gen_toks,
batched (longest first, so batches pad little), greedy or sampled with a seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from herd.generation import TextStream, generate_tokens
from herd.model import Transformer
from herd.tokenizer import Tokenizer


def generate_until(
    model: Transformer,
    tok: Tokenizer,
    prompts: Sequence[Sequence[int]],
    *,
    stop: Sequence[str] = (),
    max_gen_toks: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 8,
    on_done: Callable[[int], None] | None = None,
) -> list[str]:
    """The text of each prompt's continuation, cut before the first stop string; one per prompt, in order.

    Prompts longer than the context keep their last tokens. Greedy outputs do not depend on batch_size;
    sampled ones are reproducible for a given seed and batch_size.
    """
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    texts: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        streams = [TextStream(tok, stop) for _ in rows]

        def on_token(row: int, token: int, streams: list[TextStream] = streams) -> bool:
            streams[row].push(token)
            return streams[row].stopped

        generate_tokens(
            model, [prompts[i] for i in rows], max_new_tokens=max_gen_toks, temperature=temperature, top_p=top_p,
            seed=seed + start, stop_ids=tok.stop_ids, on_token=on_token, truncate=True,
        )
        for index, stream in zip(rows, streams, strict=True):
            stream.close()
            texts[index] = stream.text
        if on_done is not None:
            on_done(len(rows))
    return texts
