"""The compiled CPU decode step calls inductor's graph itself after its first two steps (herd.generation.decode_step):
dynamo runs at the first two steps, and the logits equal those of the step run through dynamo every time, for fp32 and
int8 weight-only models; on the plain path (HERD_CPU_PLAIN=1) every step goes through dynamo."""

import copy

import pytest
import torch

from herd.generation import decode_step
from herd.model import KVCache, cpu_tuning
from herd.serve.quantize import quantize
from tests.generation.test_generation import random_model

STEPS = 6


def decode(model, monkeypatch, direct: bool) -> tuple[torch.Tensor, int]:
    """(logits of STEPS greedy steps, how many of them entered dynamo's compiled function)."""
    real = decode_step._compiled_decode_step("cpu", cpu_tuning.decode_backend())
    entered = []
    weight = model.tok_embeddings.weight
    cache = KVCache.allocate(model.config, 1, 8 + STEPS + 1, dtype=weight.dtype, device="cpu")
    logits = []
    with monkeypatch.context() as patch, torch.inference_mode():
        patch.setattr(decode_step, "_compiled_decode_step", lambda *_: lambda *a: entered.append(1) or real(*a))
        if not direct:
            patch.setattr(decode_step, "_direct_call", lambda *_: [])
        ids = model(torch.arange(1, 9)[None], cache=cache, last_only=True)[:, -1].argmax(-1, keepdim=True)
        step = decode_step.make_decode_step(model, cache, True)
        for _ in range(STEPS):
            logits.append(step(ids))
            ids = logits[-1].argmax(-1, keepdim=True)
    return torch.stack(logits), len(entered)


@pytest.mark.parametrize("weights", ["fp32", "int8"])
def test_steps_after_the_first_call_the_graph_without_dynamo(weights, monkeypatch):
    monkeypatch.delenv(cpu_tuning.PLAIN_ENV, raising=False)
    model = random_model()
    model = quantize(copy.deepcopy(model), "int8") if weights == "int8" else model
    direct, entered = decode(model, monkeypatch, direct=True)
    through_dynamo, entered_every_step = decode(model, monkeypatch, direct=False)
    assert (entered, entered_every_step) == (2, STEPS)
    assert torch.equal(direct, through_dynamo)
    with torch.inference_mode():  # and the eager step's greedy tokens (int8: torch's own int8 kernel)
        eager_cache = KVCache.allocate(model.config, 1, 8 + STEPS + 1, dtype=direct.dtype, device="cpu")
        ids = model(torch.arange(1, 9)[None], cache=eager_cache, last_only=True)[:, -1].argmax(-1, keepdim=True)
        eager = decode_step.make_decode_step(model, eager_cache, False)
        for got in direct:
            ids = eager(ids).argmax(-1, keepdim=True)
            assert torch.equal(ids, got.argmax(-1, keepdim=True))


def test_the_plain_path_enters_dynamo_every_step(monkeypatch):
    monkeypatch.setenv(cpu_tuning.PLAIN_ENV, "1")
    _, entered = decode(random_model(), monkeypatch, direct=True)
    assert entered == STEPS
