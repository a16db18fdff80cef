"""Generation: token-id prompts -> new ids through a KV cache (batched, seeded, streaming, compiled where it pays),
and its text front end `generate` / `generate_results` (what `herd.generate` is).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from herd.errors import HerdError
from herd.generation.background_compile import BackgroundCompile
from herd.generation.decode_step import choose_decode_path, make_decode_step
from herd.generation.sampling import SamplingParams, sample, token_logprobs
from herd.generation.stopping import TextStream
from herd.model import KVCache, ModelConfig, Transformer
from herd.tokenizer import Tokenizer

FinishReason = Literal["stop", "length"]
TokenCallback = Callable[[int, int], bool | None]
"""on_token(prompt_index, token_id): called for every new id in order; returning True ends that prompt."""
TextCallback = Callable[[int, str], None]
"""on_text(prompt_index, piece): called with each newly decoded piece of text."""


@dataclass
class GenerationResult:
    """The continuation of one prompt."""

    tokens: list[int]
    """The new ids, without the stop token that ended them (a stop string's ids are kept)."""
    logprobs: list[float] | None
    """log p of each new id under the model's raw distribution (log_softmax of the logits at temperature 1,
    before top-k / top-p), when asked for; independent of the sampling settings, like vLLM's default."""
    finish_reason: FinishReason
    """"stop": a stop token, stop string or on_token ended it; "length": max_new_tokens did."""
    text: str | None = None
    """The decoded new text, cut before a stop string (text API only; None from generate_tokens)."""


@torch.inference_mode()
def generate_tokens(
    model: Transformer,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
    stop_ids: Iterable[int] = (),
    logprobs: bool = False,
    on_token: TokenCallback | None = None,
    truncate: bool = False,
    compile: bool | None | BackgroundCompile = False,
    check_every: int | None = None,
) -> list[GenerationResult]:
    """Continue each prompt by up to `max_new_tokens` ids; one result per prompt, in order.

    The batch is left-padded and prefilled in one forward, then decoded one token per step. Rows that
    finish ride along masked out until all are done: decoding reads every weight once per step whatever
    the batch size, and a fixed batch keeps one shape for the compiled step. A prompt that does not fit
    the context with max_new_tokens is an error, or with `truncate` loses its first tokens (the BOS too).
    `compile` runs the decode step through torch.compile: CUDA graphs on GPUs; on CPUs a one-time compile per
    model and batch size (any prompt length) for faster decoding after it (benchmarks/README.md), its kernels cached
    on disk for later processes; None picks the fastest path here (`choose_decode_path`); a `BackgroundCompile`
    decodes eagerly until its compiled step is ready (a chat session's). The host
    looks at the new ids, and so calls on_token and notices stops, every `check_every` steps (default:
    every step on CPU, every 8 on accelerators, where each look waits for the device); ids generated past
    a stop are discarded.
    """
    params = SamplingParams(temperature, top_p, top_k)
    if max_new_tokens < 0:
        raise HerdError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if check_every is not None and check_every < 1:
        raise HerdError(f"check_every must be >= 1 (or None for the device's default), got {check_every}")
    prompts = _fit_context(prompts, max_new_tokens, model.config, truncate)
    results = [GenerationResult([], [] if logprobs else None, "length") for _ in prompts]
    if not prompts or max_new_tokens == 0:
        return results
    weight = model.tok_embeddings.weight
    tokens, pad = _left_pad(prompts, weight.device)
    cache = KVCache.allocate(
        model.config, len(prompts), tokens.shape[1] + max_new_tokens, dtype=weight.dtype, device=weight.device, pad=pad,
        kv_heads=model.kv_heads,
    )
    generator = torch.Generator(device=weight.device).manual_seed(seed)
    check_every = check_every or (1 if weight.device.type == "cpu" else 8)
    stops = frozenset(stop_ids)
    new_ids = torch.empty(len(prompts), max_new_tokens, dtype=torch.long, device=weight.device)
    new_logprobs = torch.empty(new_ids.shape, device=weight.device) if logprobs else None

    logits = model(tokens, cache=cache, last_only=True)[:, -1]
    if isinstance(compile, BackgroundCompile):
        step = compile.step(cache)
    else:
        step = make_decode_step(model, cache, choose_decode_path(model, compile, max_new_tokens, len(prompts))[0])
    live, checked = list(range(len(prompts))), 0
    for i in range(max_new_tokens):
        ids = sample(logits, params, generator)
        if model.tp is not None:  # rank 0 samples for every rank
            model.tp.broadcast(ids)
        new_ids[:, i] = ids
        if new_logprobs is not None:
            new_logprobs[:, i] = token_logprobs(logits, ids)
        if i + 1 - checked == check_every or i + 1 == max_new_tokens:
            logprob_rows = None if new_logprobs is None else new_logprobs[:, checked : i + 1].tolist()
            live = _collect(results, live, new_ids[:, checked : i + 1].tolist(), logprob_rows, stops, on_token)
            checked = i + 1
            if not live:
                break
        if i + 1 < max_new_tokens:
            logits = step(ids[:, None])
    return results


def generate_results(
    model: Transformer,
    tok: Tokenizer,
    prompts: str | Sequence[str],
    *,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
    stop: Sequence[str] | None = None,
    logprobs: bool = False,
    on_text: TextCallback | None = None,
    chat: bool = False,
    truncate: bool = False,
    compile: bool | None = None,
) -> list[GenerationResult]:
    """Continue text prompts: `generate_tokens` on their ids, with `.text` filled in; one result per prompt.

    Prompts are encoded with BOS, or with `chat` as one user message each in the Llama 3 chat format.
    The tokenizer's stop tokens (end of text, end of turn, end of message) always end a row; a `stop`
    string ends it too and is cut from the text. `on_text(index, piece)` streams each row's text: the
    pieces join to its final text and never split a UTF-8 character nor show part of a stop string. `compile`:
    as `generate_tokens`'s, by default None (the fastest path here).
    """
    texts = [prompts] if isinstance(prompts, str) else list(prompts)
    ids = [tok.encode_dialog([{"role": "user", "content": t}]) if chat else tok.encode(t, bos=True) for t in texts]
    streams = [TextStream(tok, stop or ()) for _ in texts]

    def on_token(row: int, token: int) -> bool:
        _emit(on_text, row, streams[row].push(token))
        return streams[row].stopped

    results = generate_tokens(
        model, ids, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed,
        stop_ids=tok.stop_ids, logprobs=logprobs, on_token=on_token, truncate=truncate, compile=compile,
    )
    for row, (result, stream) in enumerate(zip(results, streams, strict=True)):
        _emit(on_text, row, stream.close())
        result.text = stream.text
    return results


def generate(
    model: Transformer,
    tok: Tokenizer,
    prompts: str | Sequence[str],
    *,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
    stop: Sequence[str] | None = None,
    on_text: TextCallback | None = None,
    chat: bool = False,
    truncate: bool = False,
    compile: bool | None = None,
) -> str | list[str]:
    """The generated text: a str for one prompt, a list for a list; options as in `generate_results`."""
    results = generate_results(
        model, tok, prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
        seed=seed, stop=stop, on_text=on_text, chat=chat, truncate=truncate, compile=compile,
    )
    texts = [result.text or "" for result in results]
    return texts[0] if isinstance(prompts, str) else texts


def _emit(on_text: TextCallback | None, row: int, piece: str) -> None:
    if piece and on_text is not None:
        on_text(row, piece)


def _fit_context(
    prompts: Sequence[Sequence[int]], max_new_tokens: int, config: ModelConfig, truncate: bool
) -> list[list[int]]:
    """The prompts as lists, checked against the vocabulary and the context (cut to fit with `truncate`)."""
    room = config.max_seq_len - max_new_tokens
    if room < 1:
        raise HerdError(
            f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's context of "
            f"{config.max_seq_len} tokens; lower max_new_tokens"
        )
    fitted = []
    for index, prompt in enumerate(prompts):
        prompt = list(prompt)
        if not prompt:
            raise HerdError(f"prompt {index} is empty; give it at least one token (e.g. the BOS id)")
        if not 0 <= min(prompt) <= max(prompt) < config.vocab_size:
            raise HerdError(f"prompt {index} has ids outside the model's vocabulary 0..{config.vocab_size - 1}")
        if len(prompt) > room:
            if not truncate:
                raise HerdError(
                    f"prompt {index} has {len(prompt)} tokens; with max_new_tokens={max_new_tokens} that is "
                    f"{len(prompt) + max_new_tokens}, over the model's context of {config.max_seq_len}: shorten "
                    f"the prompt, lower max_new_tokens, or pass truncate=True to keep its last {room} tokens"
                )
            prompt = prompt[-room:]
        fitted.append(prompt)
    return fitted


def _left_pad(prompts: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens [B, longest] with each prompt at the right end, and the padding per row [B]."""
    width = max(len(prompt) for prompt in prompts)
    tokens = torch.zeros(len(prompts), width, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        tokens[row, width - len(prompt) :] = torch.tensor(prompt)
    pad = torch.tensor([width - len(prompt) for prompt in prompts])
    return tokens.to(device), pad.to(device)


def _collect(
    results: list[GenerationResult],
    live: list[int],
    ids: list[list[int]],
    logprobs: list[list[float]] | None,
    stops: frozenset[int],
    on_token: TokenCallback | None,
) -> list[int]:
    """Append the new ids of the live rows to their results; returns the rows still live."""
    still = []
    for row in live:
        result = results[row]
        for j, token in enumerate(ids[row]):
            if token in stops:
                result.finish_reason = "stop"
                break
            result.tokens.append(token)
            if logprobs is not None:
                result.logprobs.append(logprobs[row][j])
            if on_token is not None and on_token(row, token):
                result.finish_reason = "stop"
                break
        else:
            still.append(row)
    return still

