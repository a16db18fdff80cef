"""Prepacked linears for CPU serving: the same math as the plain model, on the engine's greedy path too."""

from __future__ import annotations

import copy

import pytest
import torch

import herd
from herd.model.cpu_tuning import can_prepack
from herd.serve import Engine, EngineConfig, RequestParams
from herd.serve.packed import PackedLinear, can_pack, pack_linears
from herd.serve.quantize import quantize_int8
from tests.serve.test_serve_engine import _run, _tokens

pytestmark = pytest.mark.skipif(not can_prepack(torch.empty(0)), reason="torch built without oneDNN, or HERD_CPU_PLAIN")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_linear_matches_the_plain_linear(dtype):
    if not can_prepack(torch.empty(0, dtype=dtype)):
        pytest.skip(f"no oneDNN {dtype} kernels on this CPU: pack_linears leaves {dtype} linears plain")
    torch.manual_seed(0)
    linear = torch.nn.Linear(48, 80, bias=False).to(dtype)
    packed = PackedLinear(linear)
    with torch.inference_mode():
        for shape in [(1, 48), (16, 48), (3, 7, 48)]:
            x = torch.randn(shape, dtype=dtype)
            tol = 1e-5 if dtype == torch.float32 else 2e-2
            torch.testing.assert_close(packed(x), linear(x), rtol=tol, atol=tol)


def test_packing_replaces_every_linear_and_keeps_a_tied_embedding():
    model, tok = herd.load("tiny")
    packed = pack_linears(copy.deepcopy(model))
    linears = [m for m in packed.modules() if isinstance(m, torch.nn.Linear)]
    assert not linears and isinstance(packed.output, PackedLinear)
    torch.testing.assert_close(packed.tok_embeddings.weight, model.tok_embeddings.weight)
    tokens = torch.tensor([tok.encode("The quick brown fox jumps over the lazy dog.", bos=True)])
    with torch.inference_mode():
        torch.testing.assert_close(packed(tokens), model(tokens), rtol=1e-4, atol=1e-4)
    assert not can_pack(quantize_int8(copy.deepcopy(model)))  # int8 linears stay as they are
    assert not can_pack(model.to("meta"))


def test_a_packed_engine_serves_the_plain_engines_greedy_tokens():
    model, tok = herd.load("tiny")
    prompts = [tok.encode(text, bos=True) for text in ("Hello there, how are you?", "Tell me about the sea. " * 6)]
    params = RequestParams(max_tokens=12)
    results = []
    for candidate in (model, pack_linears(copy.deepcopy(model))):
        engine = Engine(candidate, tok, EngineConfig(block_size=4, max_running=4, max_step_tokens=16))
        outputs = _run(engine, {0: [(str(i), prompt, params) for i, prompt in enumerate(prompts)]})
        results.append({request: _tokens(outs) for request, outs in outputs.items()})
    assert results[0] == results[1]
    assert all(len(t) == 12 for t in results[0].values())
