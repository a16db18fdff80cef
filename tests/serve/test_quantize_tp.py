"""fp8 storage (float8_e4m3fn + per-channel scales) and int8/fp8 applied per tensor-parallel rank after slicing:
column-parallel slices quantize to exactly the rows of the whole quantized weight; row-parallel slices get their own
per-channel scales, so each rank's partial product dequantizes exactly and their sum is as close as the whole's."""

from __future__ import annotations

import copy

import pytest
import torch

import herd
from herd.errors import HerdError
from herd.model.tensor_parallel import shard
from herd.serve.quantize import FP8, QUANTIZED, Fp8Linear, Int8Linear, quantize


def dequantized(layer: torch.nn.Module) -> torch.Tensor:
    return layer.weight.float() * layer.scale[:, None]


def linear(weight: torch.Tensor) -> torch.nn.Linear:
    layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    layer.weight.data = weight
    return layer


@pytest.fixture
def weight() -> torch.Tensor:
    torch.manual_seed(0)
    w = torch.randn(96, 64) * torch.logspace(-3, 0, 64)  # columns of very different sizes, as across ranks
    return w


def test_fp8_storage_and_dequantization(weight):
    """e4m3 keeps 3 mantissa bits: each weight is within 2^-4 of itself relative, or half the smallest subnormal
    (2^-10 of its row's scale) near zero."""
    layer = Fp8Linear(linear(weight))
    assert layer.weight.dtype == FP8 and layer.scale.dtype == torch.float32
    assert torch.equal(layer.weight.float().abs().amax(1), torch.full((96,), 448.0))
    error = (dequantized(layer) - weight).abs()
    assert (error <= weight.abs() * 2**-4 + layer.scale[:, None] * 2**-10).all()
    x = torch.randn(3, 5, 64)
    torch.testing.assert_close(layer(x), x @ dequantized(layer).T, rtol=1e-5, atol=1e-6)


def test_fp8_model_stays_close_to_bf16():
    """Tolerance: mean KL(bf16 || fp8) < 2e-3 nats a position on the tiny preset (measured 3.4e-4; int8 2.6e-5)."""
    model, tok = herd.load("tiny", dtype="bfloat16")
    quantized = quantize(copy.deepcopy(model), "fp8")
    assert isinstance(quantized.output, Fp8Linear) and isinstance(quantized.layers[1].feed_forward.w2, Fp8Linear)
    tokens = torch.tensor([tok.encode("The quick brown fox jumps over the lazy dog.", bos=True)])
    with torch.inference_mode():
        reference, approx = model(tokens).float().log_softmax(-1), quantized(tokens).float().log_softmax(-1)
    kl = (reference.exp() * (reference - approx)).sum(-1).mean()
    assert kl < 2e-3


@pytest.mark.parametrize("kind", ["int8", "fp8"])
def test_column_parallel_slices_quantize_like_the_whole(weight, kind):
    whole = QUANTIZED[kind](linear(weight))
    for rank in range(4):
        local = QUANTIZED[kind](linear(shard(weight, 0, rank, 4)))
        assert torch.equal(local.weight.view(torch.int8), shard(whole.weight, 0, rank, 4).view(torch.int8))
        assert torch.equal(local.scale, shard(whole.scale, 0, rank, 4))


def error_bound(layer: torch.nn.Module, weight: torch.Tensor) -> torch.Tensor:
    """The most each dequantized weight can be off: half a step of its row's scale (int8), or e4m3's relative
    2^-4 plus half its smallest subnormal (fp8)."""
    if isinstance(layer, Int8Linear):
        return (layer.scale[:, None] / 2).expand_as(weight)
    return weight.abs() * 2**-4 + layer.scale[:, None] * 2**-10


@pytest.mark.parametrize("kind", ["int8", "fp8"])
def test_row_parallel_slices_have_their_own_scales(weight, kind):
    """Each rank's scale is its own columns' maximum (small for the small columns); every dequantized weight is
    within that finer scale's bound, and the ranks' partial products summed (the all-reduce) within the bound's
    propagation through x."""
    ranks = [QUANTIZED[kind](linear(shard(weight, 1, rank, 4))) for rank in range(4)]
    top = 127 if kind == "int8" else 448
    for rank, local in enumerate(ranks):
        piece = shard(weight, 1, rank, 4)
        torch.testing.assert_close(local.scale, piece.abs().amax(1) / top)
        assert ((dequantized(local) - piece).abs() <= error_bound(local, piece) * (1 + 1e-6)).all()
    assert (ranks[0].scale < QUANTIZED[kind](linear(weight)).scale / 10).all()
    x = torch.randn(7, 64, dtype=torch.float64)
    summed = sum(shard(x, 1, r, 4) @ dequantized(local).double().T for r, local in enumerate(ranks))
    bound = torch.cat([error_bound(local, shard(weight, 1, r, 4)) for r, local in enumerate(ranks)], dim=1)
    assert ((summed - x @ weight.double().T).abs() <= x.abs() @ bound.double().T * (1 + 1e-6)).all()
    with torch.inference_mode():  # through each layer's own forward (the CPU int8 kernel computes in bf16)
        forward = sum(local(shard(x, 1, r, 4).float()) for r, local in enumerate(ranks))
    torch.testing.assert_close(forward.double(), summed, rtol=2e-2, atol=2e-2)


def test_quantize_kinds_and_errors():
    model, _ = herd.load("tiny")
    assert isinstance(quantize(copy.deepcopy(model), "int8").layers[0].attention.wq, Int8Linear)
    with pytest.raises(HerdError, match="unknown quantization 'int4'; choose one of: int8, fp8"):
        quantize(model, "int4")


def test_quantize_onto_another_device_one_linear_at_a_time(monkeypatch):
    """The host model's linears are moved one at a time and quantized there ("meta" stands in for a GPU)."""
    model, _ = herd.load("tiny")
    held = []
    make = Fp8Linear.__init__

    def spy(self, linear):
        held.append(linear.weight.device.type)
        make(self, linear)

    monkeypatch.setattr(Fp8Linear, "__init__", spy)
    quantize(model, "fp8", device="meta")
    assert held and set(held) == {"meta"}
    assert {t.device.type for t in [*model.parameters(), *model.buffers()]} == {"meta"}
    assert model.layers[0].attention.wq.weight.dtype == FP8
