"""fp32 inference GEMMs through oneDNN (`cpu_tuning.linear`, the blocks' projections) against plain F.linear: equal
within fp32 rounding; taken only where it applies (CPU with oneDNN, fp32, >= 16 rows, no autograd, no autocast), and
never under `HERD_CPU_PLAIN=1`."""

import pytest
import torch
import torch.nn.functional as F

from herd.generation import generate_tokens
from herd.model import KVCache, build_model, cpu_tuning
from herd.model.transformer import Linear
from tests.tiny import model_config

ONEDNN = cpu_tuning.cpu_supports(torch.float32)


@pytest.fixture()
def onednn_calls(monkeypatch):
    """The row counts each oneDNN matmul of `cpu_tuning.linear` ran."""
    calls: list[int] = []
    real = cpu_tuning.prepacked_matmul
    monkeypatch.setattr(cpu_tuning, "prepacked_matmul", lambda x, w: calls.append(x.shape[0]) or real(x, w))
    return calls


@pytest.mark.parametrize("shape", [(16, 48), (1, 37, 48), (2, 300, 48), (5, 48)])
def test_linear_equals_f_linear_in_blocks_of_16_up_to_256_rows(shape, onednn_calls):
    x, weight = torch.randn(shape), torch.randn(72, 48)
    with torch.inference_mode():
        out = cpu_tuning.linear(x, weight)
    torch.testing.assert_close(out, F.linear(x, weight), rtol=1e-5, atol=1e-5)
    rows = x.numel() // 48
    body = rows - rows % 16
    expected = [] if rows < 16 or not ONEDNN else [min(256, body - i) for i in range(0, body, 256)]
    assert onednn_calls == expected


def test_one_row_goes_to_onednn_for_the_head_only(onednn_calls):
    x, weight = torch.randn(1, 1, 48), torch.randn(300, 48)
    with torch.inference_mode():
        head = cpu_tuning.linear(x, weight, one_row=True)
        torch.testing.assert_close(head, F.linear(x, weight), rtol=1e-5, atol=1e-5)
        cpu_tuning.linear(x, weight)
    assert onednn_calls == ([1] if ONEDNN else [])


def test_linear_keeps_f_linear_for_autograd_bf16_autocast_and_the_plain_path(monkeypatch, onednn_calls):
    weight = torch.randn(72, 48, requires_grad=True)
    x = torch.randn(32, 48)
    cpu_tuning.linear(x, weight).sum().backward()  # grad needed: autograd's F.linear
    assert weight.grad is not None
    with torch.no_grad():
        cpu_tuning.linear(x.bfloat16(), weight.bfloat16())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert cpu_tuning.linear(x, weight).dtype == torch.bfloat16
        monkeypatch.setenv(cpu_tuning.PLAIN_ENV, "1")
        cpu_tuning.linear(x, weight)
    assert onednn_calls == []


@pytest.mark.skipif(not ONEDNN, reason="torch built without oneDNN")
def test_prefill_runs_onednn_and_matches_the_plain_path(monkeypatch, onednn_calls):
    model = build_model(model_config(vocab_size=300, multiple_of=16)).eval()
    model.init_weights(0)
    tokens = torch.randint(0, 300, (1, 40), generator=torch.Generator().manual_seed(0))

    def prefill() -> torch.Tensor:
        with torch.inference_mode():
            cache = KVCache.allocate(model.config, 1, 41, dtype=torch.float32, device="cpu")
            return model(tokens, cache=cache, last_only=True)

    fast = prefill()
    # 7 projections a layer on 32 rows each (the other 8 by F.linear), and the head on the last position
    assert onednn_calls == [32] * 7 * model.config.n_layers + [1]
    monkeypatch.setenv(cpu_tuning.PLAIN_ENV, "1")
    torch.testing.assert_close(fast, prefill(), rtol=1e-5, atol=1e-5)
    prompt = tokens[0].tolist()
    plain = generate_tokens(model, [prompt], max_new_tokens=4)[0].tokens
    monkeypatch.setenv(cpu_tuning.PLAIN_ENV, "0")
    assert generate_tokens(model, [prompt], max_new_tokens=4)[0].tokens == plain


def test_a_compiled_forward_traces_f_linear_for_inductor():
    """The compiled decode step's decompositions (cpu_tuning.decode_backend) work on aten's matmul, not oneDNN's op."""
    traced: list[str] = []

    def backend(gm: torch.fx.GraphModule, inputs: list) -> torch.fx.GraphModule:
        traced.extend(str(node.target) for node in gm.graph.nodes if node.op == "call_function")
        return gm

    head = Linear(48, 72, one_row=True)
    with torch.inference_mode():
        torch.compile(head, backend=backend, fullgraph=True)(torch.randn(1, 48))
    assert traced and all("mkldnn" not in target for target in traced)
    assert any("linear" in target for target in traced)
