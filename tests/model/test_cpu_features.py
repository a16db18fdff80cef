"""The CPU tricks of herd.model.cpu_tuning against the plain path (`HERD_CPU_PLAIN=1`), and their CPU checks.

Each trick runs beside the plain public-API path on the same inputs and must agree with it (tolerances at each
test). The fast paths check the instruction set: bf16 prepacking (oneDNN) only where the CPU has its kernels. CI
runs on AVX-512, so the plain path other CPUs take is covered twice: forced here with HERD_CPU_PLAIN=1 (training
steps, the loss tests, bf16 serving), and for real in a subprocess whose oneDNN is capped at AVX2
(`ONEDNN_MAX_CPU_ISA`), where bf16 prepacking raises as on an AVX2-only EPYC.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import herd
from herd.model import cpu_tuning
from herd.serve import Engine, EngineConfig, RequestParams
from herd.serve.packed import PackedLinear, pack_linears
from herd.train import fused_loss
from herd.train.pretrain import pretrain
from tests.serve.test_serve_engine import _run, _tokens
from tests.tiny import losses, tiny_config
from tests.train import test_trainer

BF16 = torch.empty(0, dtype=torch.bfloat16)


@pytest.fixture()
def plain_cpu(monkeypatch):
    """The plain path forced, as on a CPU without oneDNN's bf16 kernels; prepacking then fails the test."""
    monkeypatch.setenv(cpu_tuning.PLAIN_ENV, "1")

    def refuse(*args):
        raise AssertionError("prepacked although the plain path is forced")

    monkeypatch.setattr(fused_loss, "prepack", refuse)


@pytest.fixture()
def prepacks(monkeypatch) -> list[torch.dtype]:
    """The dtype of every weight the loss prepacks."""
    calls = []
    monkeypatch.setattr(fused_loss, "prepack", lambda w, rows: calls.append(w.dtype) or cpu_tuning.prepack(w, rows))
    return calls


def fast_path_taken(prepacks: list[torch.dtype], plain: str, dtype: torch.dtype) -> None:
    """The loss prepacked its head (in the compute dtype) unless the switch is on or the CPU lacks the kernels."""
    assert bool(prepacks) == (plain == "0" and cpu_tuning.cpu_supports(dtype))
    assert set(prepacks) <= {dtype}
    prepacks.clear()


def test_bf16_prepacking_asks_torchs_own_check():
    assert cpu_tuning.cpu_supports(torch.bfloat16) == torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert cpu_tuning.cpu_supports(torch.float32) == torch.backends.mkldnn.is_available()
    assert not cpu_tuning.cpu_supports(torch.float16)


def test_the_switch_forces_the_plain_path(monkeypatch):
    monkeypatch.setenv(cpu_tuning.PLAIN_ENV, "1")
    assert not cpu_tuning.can_prepack(BF16) and not cpu_tuning.can_prepack(torch.empty(0))
    monkeypatch.setenv(cpu_tuning.PLAIN_ENV, "0")
    assert cpu_tuning.can_prepack(torch.empty(0)) == torch.backends.mkldnn.is_available()


@pytest.mark.parametrize("name", ["test_linear_cross_entropy_equals_the_plain_head_and_loss",
                                  "test_token_losses_in_chunks_equal_the_whole_logits_gradients_included"])
def test_the_loss_tests_pass_on_the_plain_path(plain_cpu, monkeypatch, name):
    getattr(test_trainer, name)(monkeypatch, compiled=False)


TOLERANCES = {torch.float32: {"rtol": 1e-5, "atol": 1e-6}, torch.bfloat16: {"rtol": 1e-3, "atol": 1e-4}}
"""Loss and gradients of the prepacked head against the plain one. fp32: oneDNN's blocked GEMM sums in another order.
bf16: both paths round each logit to bf16 once; a different summation order flips a rounding here and there."""


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_the_plain_loss_equals_the_prepacked_one(monkeypatch, prepacks, dtype):
    torch.manual_seed(0)
    hidden, weight = torch.randn(300, 64, requires_grad=True), torch.randn(500, 64, requires_grad=True)
    targets = torch.randint(0, 500, (300,))
    runs = []
    for plain in ("0", "1"):
        monkeypatch.setenv(cpu_tuning.PLAIN_ENV, plain)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            loss = fused_loss.linear_cross_entropy(hidden, weight, targets)
        loss.backward()
        fast_path_taken(prepacks, plain, dtype)
        runs.append((loss.detach(), hidden.grad, weight.grad))
        hidden.grad = weight.grad = None
    for fast, plain in zip(*runs):
        torch.testing.assert_close(plain, fast, **TOLERANCES[dtype])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_training_on_the_plain_path_matches_the_fast_path(shards, tmp_path, monkeypatch, prepacks, dtype):
    """Five steps' losses: apart by the loss's own differences (TOLERANCES) carried through five updates."""
    runs = {}
    for plain in ("0", "1"):
        monkeypatch.setenv(cpu_tuning.PLAIN_ENV, plain)
        config = tiny_config(shards, tmp_path / f"plain{plain}", f"dtype={dtype}", "steps=5", "eval_interval=0")
        runs[plain] = losses(pretrain(config).run_dir)
        fast_path_taken(prepacks, plain, getattr(torch, dtype))
    assert len(runs["1"]) == 5 and all(map(torch.isfinite, torch.tensor(runs["1"])))
    assert runs["1"] == pytest.approx(runs["0"], rel=1e-4 if dtype == "float32" else 1e-3)


def test_a_bf16_model_serves_on_the_plain_path_as_on_the_fast_path(monkeypatch):
    model, tok = herd.load("tiny")
    model = model.to(torch.bfloat16)
    prompts = [tok.encode(text, bos=True) for text in ("Hello there, how are you?", "Tell me about the sea. " * 6)]
    results = {}
    for plain in ("0", "1"):
        monkeypatch.setenv(cpu_tuning.PLAIN_ENV, plain)
        served = pack_linears(copy.deepcopy(model))
        assert isinstance(served.output, PackedLinear) == (plain == "0" and cpu_tuning.cpu_supports(torch.bfloat16))
        engine = Engine(served, tok, EngineConfig(block_size=4, max_running=4, max_step_tokens=16))
        outputs = _run(engine, {0: [(str(i), p, RequestParams(max_tokens=8)) for i, p in enumerate(prompts)]})
        results[plain] = {request: _tokens(outs) for request, outs in outputs.items()}
    assert results["1"] == results["0"] and all(len(t) == 8 for t in results["1"].values())


AVX2_SCRIPT = textwrap.dedent("""
    import torch
    from herd.model.cpu_tuning import can_prepack
    from herd.model import ModelConfig, build_model
    from herd.serve.packed import PackedLinear, pack_linears
    from herd.serve.quantize import quantize_int8
    from herd.train.fused_loss import linear_cross_entropy, linear_token_losses

    hidden, weight = torch.randn(40, 16, requires_grad=True), torch.randn(100, 16, requires_grad=True)
    targets = torch.randint(0, 100, (40,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        linear_cross_entropy(hidden, weight, targets).backward()
        linear_token_losses(hidden, weight, targets).sum().backward()
    model = build_model(ModelConfig(dim=64, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=128), dtype=torch.bfloat16)
    model.init_weights(0)
    with torch.inference_mode():
        logits = pack_linears(model)(torch.randint(0, 128, (1, 8)))
    assert not isinstance(model.output, PackedLinear) and logits.isfinite().all()
    with torch.inference_mode():  # the int8 kernel has AVX2 and generic builds: it runs here too
        assert quantize_int8(model)(torch.randint(0, 128, (1, 8))).isfinite().all()
    assert not can_prepack(torch.empty(0, dtype=torch.bfloat16)) and can_prepack(torch.empty(0))  # fp32 still packs
    print("bf16 ok on AVX2")
""")


def test_a_cpu_capped_at_avx2_trains_and_serves_bf16_plainly():
    """oneDNN capped at AVX2 (and ATen's kernels with it) reports no bf16 support and its bf16 reorder raises, as
    on an AVX2-only EPYC; the loss and a packed bf16 model then take the plain path, and the int8 kernel runs."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    env.pop("HERD_CPU_PLAIN", None)
    result = subprocess.run([sys.executable, "-c", AVX2_SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "bf16 ok on AVX2" in result.stdout


# --- each trick against the plain path (HERD_CPU_PLAIN=1), same inputs ----------------------------------------
def test_the_switch_turns_every_trick_off(monkeypatch):
    monkeypatch.setenv(cpu_tuning.PLAIN_ENV, "1")
    assert not cpu_tuning.can_prepack(torch.empty(0))
    assert cpu_tuning.decode_backend() == "inductor"
    monkeypatch.setattr(torch.ops.aten, "_weight_int8pack_mm", None)  # called, it would raise
    x, weight = torch.randn(3, 8), torch.randint(-127, 128, (5, 8), dtype=torch.int8)
    assert cpu_tuning.int8_matmul(x, weight, torch.ones(5)).shape == (3, 5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_a_prepacked_matmul_equals_the_plain_one(dtype):
    """fp32: oneDNN's blocked GEMM sums in another order (rtol 1e-5 at K=256). bf16: both accumulate in fp32 and
    round the output to bf16 once, so they differ by at most an ulp of bf16 (2^-8 relative)."""
    weight = torch.randn(96, 256, dtype=dtype)
    if not cpu_tuning.can_prepack(weight):
        pytest.skip("this CPU has no prepacked kernels for the dtype")
    for rows in (1, 7, 16, 40):
        x = torch.randn(rows, 256, dtype=dtype)
        got = cpu_tuning.prepacked_matmul(x, cpu_tuning.prepack(weight, 16))
        tol = {"rtol": 1e-5, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 2**-7, "atol": 2**-7 * 16}
        torch.testing.assert_close(got, x @ weight.T, **tol)


def test_the_int8_kernel_equals_dequantize_then_multiply(monkeypatch):
    """The kernel rounds activations and output to bf16 (8 significant bits): 2^-7 relative error each way, on
    outputs of magnitude ~sqrt(K) * |x| * |w| = 16 here, so atol 0.3 (observed: under 0.15)."""
    torch.manual_seed(0)
    x, weight, scale = torch.randn(16, 256), torch.randint(-127, 128, (96, 256), dtype=torch.int8), torch.rand(96) / 127
    trick = cpu_tuning.int8_matmul(x, weight, scale)
    monkeypatch.setenv(cpu_tuning.PLAIN_ENV, "1")
    plain = cpu_tuning.int8_matmul(x, weight, scale)
    assert trick.dtype == plain.dtype == torch.float32
    torch.testing.assert_close(trick, plain, rtol=2**-6, atol=0.3)


def test_the_decode_decompositions_equal_matmul_and_sdpa():
    """The inductor decompositions run eagerly: sums in another order than BLAS and the flash kernel, fp32 (1e-5)."""
    torch.manual_seed(0)
    a, b = torch.randn(1, 64), torch.randn(64, 48)
    torch.testing.assert_close(cpu_tuning._rowvec_matmul(a, b), a @ b, rtol=1e-5, atol=1e-5)
    assert cpu_tuning._rowvec_matmul(torch.randn(2, 64), b) is NotImplemented  # only one row
    q, k, v = torch.randn(2, 4, 1, 16), torch.randn(2, 2, 9, 16), torch.randn(2, 2, 9, 16)
    mask = torch.ones(2, 1, 1, 9, dtype=torch.bool)
    mask[0, ..., :3] = False  # a left-padded row
    out, _ = cpu_tuning._one_query_attention(q, k, v, attn_mask=mask)
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)


def test_the_decode_backend_compiles_without_size_asserts(monkeypatch):
    """Its wrapper checks no input's size and stride each call (plain inductor's does); the result is the matmul's."""
    from torch._inductor.utils import fresh_cache, run_and_get_code

    monkeypatch.setenv(cpu_tuning.PLAIN_ENV, "0")
    x, weight = torch.randn(1, 32), torch.randn(48, 32)
    codes = {}
    with fresh_cache(), torch.inference_mode():
        for name, backend in (("decode", cpu_tuning.decode_backend()), ("inductor", "inductor")):
            torch.compiler.reset()
            out, codes[name] = run_and_get_code(torch.compile(lambda x, w: x @ w.t(), backend=backend), x, weight)
            torch.testing.assert_close(out, x @ weight.t(), rtol=1e-5, atol=1e-5)
    torch.compiler.reset()
    assert "assert_size_stride(" in "".join(codes["inductor"])
    assert "assert_size_stride(" not in "".join(codes["decode"])


@pytest.mark.slow
def test_compiled_decoding_with_the_decompositions_equals_plain_inductor(monkeypatch):
    """Greedy tokens equal; log-probabilities within 1e-4 (fp32 sums in another order, compounded over steps). Plain
    first: the tricked compile must still run its decompositions, not take the plain graph's cached kernels."""
    from tests.generation.test_generation import prompts_of, random_model

    from herd.generation import generate_tokens

    torch.compiler.reset()  # no graph compiled by an earlier test: each path compiles here
    decomposed = []
    rowvec = cpu_tuning._rowvec_matmul
    monkeypatch.setattr(cpu_tuning, "_rowvec_matmul", lambda a, b: decomposed.append(a.shape) or rowvec(a, b))
    model, prompts = random_model(), prompts_of([6, 2], seed=12)
    runs = {}
    for plain in ("1", "0"):
        monkeypatch.setenv(cpu_tuning.PLAIN_ENV, plain)
        runs[plain] = generate_tokens(model, prompts, max_new_tokens=8, logprobs=True, compile=True)
        assert bool(decomposed) == (plain == "0")
    for trick, reference in zip(runs["0"], runs["1"], strict=True):
        assert trick.tokens == reference.tokens
        assert trick.logprobs == pytest.approx(reference.logprobs, abs=1e-4)
