"""Loglikelihood requests: the summed log-probability of a continuation after a context, and whether
greedy decoding would have produced it, with lm-evaluation-harness's tokenization and semantics.

Requests that share a context (the choices of one multiple-choice question) run the context once: a
prefill through a KV cache, whose rows are then repeated for each continuation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import groupby

import torch

from herd.model import KVCache, Transformer
from herd.tokenizer import Tokenizer

TokenPair = tuple[list[int], list[int]]
"""(context ids, continuation ids)."""


@dataclass(frozen=True)
class Loglikelihood:
    """The answer to one request."""

    logprob: float
    """Sum of log p(continuation token | everything before it)."""
    is_greedy: bool
    """Whether every continuation token is the argmax of its distribution."""


def encode_pair(tok: Tokenizer, context: str, continuation: str, *, bos: bool = True) -> TokenPair:
    """lm-eval's split: the context's trailing whitespace moves to the continuation, context + continuation is
    encoded whole and the continuation is what follows the context's own ids; an empty context is the BOS."""
    if not context:
        return [tok.bos_id], tok.encode(continuation)
    stripped = context.rstrip()
    context, continuation = stripped, context[len(stripped) :] + continuation
    whole = tok.encode(context + continuation, bos=bos)
    context_ids = tok.encode(context, bos=bos)
    return context_ids, whole[len(context_ids) :]


def loglikelihood(
    model: Transformer, tok: Tokenizer, requests: Sequence[tuple[str, str]], *, batch_size: int = 8, bos: bool = True
) -> list[Loglikelihood]:
    """Score (context, continuation) text pairs; one result per request, in order."""
    pairs = [encode_pair(tok, context, continuation, bos=bos) for context, continuation in requests]
    return loglikelihood_tokens(model, pairs, batch_size=batch_size)


@torch.inference_mode()
def loglikelihood_tokens(
    model: Transformer,
    pairs: Sequence[TokenPair],
    *,
    batch_size: int = 8,
    share_prefix: bool = True,
    on_done: Callable[[int], None] | None = None,
) -> list[Loglikelihood]:
    """Score (context ids, continuation ids) pairs; one result per pair, in order.

    Pairs are sorted longest first and run `batch_size` contexts at a time. With `share_prefix`, pairs
    with equal contexts run their context once and the output head only sees continuation positions;
    without it each pair is one plain forward over context + continuation (the reference path).
    A pair longer than the model's context keeps its last tokens, as lm-eval does. `on_done(n)` reports
    progress in pairs.
    """
    fitted = [_fit(list(ctx), list(cont), model.config.max_seq_len) for ctx, cont in pairs]
    if share_prefix:
        keys = sorted(range(len(fitted)), key=lambda i: (-len(fitted[i][0]), fitted[i][0]))
        groups = [list(g) for _, g in groupby(keys, key=lambda i: fitted[i][0])]
    else:
        groups = [[i] for i in sorted(range(len(fitted)), key=lambda i: -sum(map(len, fitted[i])))]
    results: list[Loglikelihood | None] = [None] * len(fitted)
    for batch in _batches(groups, fitted, batch_size, model.config.max_seq_len if share_prefix else None):
        if share_prefix:
            scored = _score_shared(model, [[fitted[i] for i in g] for g in batch])
        else:
            scored = _score_full(model, [fitted[g[0]] for g in batch])
        for index, result in zip([i for g in batch for i in g], scored, strict=True):
            results[index] = result
        if on_done is not None:
            on_done(sum(map(len, batch)))
    return results  # type: ignore[return-value]


def _batches(groups: list[list[int]], pairs: list[TokenPair], size: int, max_len: int | None) -> list[list[list[int]]]:
    """Consecutive groups, `size` at a time; with `max_len`, a batch also ends before its widest context plus its
    longest continuation (the shared path pads every row to both) would exceed max_len + 1 tokens."""
    batches: list[list[list[int]]] = []
    context = longest = 0
    for group in groups:
        ctx, cont = len(pairs[group[0]][0]), max(len(pairs[i][1]) for i in group)
        fits = max_len is None or max(context, ctx) + max(longest, cont) - 1 <= max_len
        if batches and len(batches[-1]) < size and fits:
            batches[-1].append(group)
            context, longest = max(context, ctx), max(longest, cont)
        else:
            batches.append([group])
            context, longest = ctx, cont
    return batches


def _fit(context: list[int], continuation: list[int], max_len: int) -> TokenPair:
    """Left-truncate so the model sees at most max_len tokens (the last continuation id is never input)."""
    assert context and continuation, "a loglikelihood request needs a non-empty context and continuation"
    overflow = len(context) + len(continuation) - 1 - max_len
    if overflow > 0:
        assert overflow < len(context), "a continuation longer than the model's context cannot be scored"
        context = context[overflow:]
    return context, continuation


def _score_shared(model: Transformer, groups: list[list[TokenPair]]) -> list[Loglikelihood]:
    """Contexts left-padded in one prefill; the cache rows repeated per continuation, then one forward over
    the continuations right-padded (causal attention keeps the padding out of the real positions)."""
    device = model.tok_embeddings.weight.device
    contexts = [group[0][0] for group in groups]
    conts = [cont for group in groups for _, cont in group]
    width = max(map(len, contexts))
    tokens = torch.zeros(len(contexts), width, dtype=torch.long)
    for row, ctx in enumerate(contexts):
        tokens[row, width - len(ctx) :] = torch.tensor(ctx)
    pad = torch.tensor([width - len(ctx) for ctx in contexts])
    cont_width = max(map(len, conts))
    cache = KVCache.allocate(
        model.config, len(contexts), width + cont_width - 1, dtype=model.tok_embeddings.weight.dtype, device=device,
        pad=pad,
    )
    first = model(tokens.to(device), cache=cache, last_only=True)[:, -1].float().log_softmax(-1)
    owner = torch.tensor([row for row, group in enumerate(groups) for _ in group], device=device)
    first = first[owner]  # [R, V]: the distribution of each continuation's first token
    rest = None
    if cont_width > 1:
        cache.keep_rows(owner)
        inputs = torch.zeros(len(conts), cont_width - 1, dtype=torch.long)
        for row, cont in enumerate(conts):
            inputs[row, : len(cont) - 1] = torch.tensor(cont[:-1])
        rest = model(inputs.to(device), cache=cache).float().log_softmax(-1)  # [R, W-1, V]
    results = []
    for row, cont in enumerate(conts):
        logprobs = first[row : row + 1]
        if rest is not None:
            logprobs = torch.cat([logprobs, rest[row, : len(cont) - 1]])
        results.append(_result(logprobs, cont))
    return results


def _score_full(model: Transformer, pairs: list[TokenPair]) -> list[Loglikelihood]:
    """One forward per batch over each context + continuation (minus its last id), right-padded."""
    device = model.tok_embeddings.weight.device
    inputs = [(ctx + cont)[:-1] for ctx, cont in pairs]
    tokens = torch.zeros(len(inputs), max(map(len, inputs)), dtype=torch.long)
    for row, ids in enumerate(inputs):
        tokens[row, : len(ids)] = torch.tensor(ids)
    logits = model(tokens.to(device))
    results = []
    for row, (ctx, cont) in enumerate(pairs):
        start = len(ctx) - 1
        results.append(_result(logits[row, start : start + len(cont)].float().log_softmax(-1), cont))
    return results


def _result(logprobs: torch.Tensor, continuation: list[int]) -> Loglikelihood:
    """Loglikelihood of `continuation` from its per-position log-distributions [len, V]."""
    target = torch.tensor(continuation, device=logprobs.device)
    total = logprobs.gather(1, target[:, None]).sum()
    greedy = bool((logprobs.argmax(-1) == target).all())
    return Loglikelihood(float(total), greedy)
