"""The compiled decode step of an int8 weight-only model (herd.serve.quantize): its one-row int8 matmul decomposition
against torch's int8 kernel, and greedy tokens equal to the eager int8 model's."""

import copy

import pytest
import torch

from herd.generation import generate_tokens
from herd.model import cpu_tuning
from herd.serve.quantize import quantize
from tests.generation.test_generation import prompts_of, random_model


def test_the_int8_decomposition_equals_torchs_int8_kernel():
    """Both sum in fp32 and round to bf16 once: equal to bf16's last bit (2^-8 relative)."""
    torch.manual_seed(0)
    x, weight = torch.randn(1, 320).bfloat16(), torch.randint(-127, 128, (96, 320), dtype=torch.int8)
    scale = (torch.rand(96) / 127).bfloat16()
    got = cpu_tuning._int8_rowvec_matmul(x, weight, scale)
    torch.testing.assert_close(got, torch.ops.aten._weight_int8pack_mm(x, weight, scale), rtol=2**-8, atol=1e-3)
    rows = torch.randn(3, 320).bfloat16()
    torch.testing.assert_close(cpu_tuning._int8_rowvec_matmul(rows, weight, scale),
                               torch.ops.aten._weight_int8pack_mm(rows, weight, scale), rtol=2**-8, atol=1e-3)


@pytest.mark.slow
def test_compiled_int8_decoding_equals_eager_int8(monkeypatch):
    """Greedy tokens equal (one row and two), and the compiled step ran the decomposition. Log-probabilities within
    0.05: inductor fuses the activations' casts to bf16 and back, so it rounds fewer of them than torch's kernel (here
    eager int8 and the plain dequantize-then-multiply path differ by 0.043, compiled and eager by 0.034)."""
    monkeypatch.delenv(cpu_tuning.PLAIN_ENV, raising=False)
    torch.compiler.reset()
    decomposed = []
    int8 = cpu_tuning._int8_rowvec_matmul
    monkeypatch.setattr(cpu_tuning, "_int8_rowvec_matmul", lambda *a: decomposed.append(a[1].shape) or int8(*a))
    model = quantize(copy.deepcopy(random_model()), "int8")
    [prompt] = prompts_of([5], seed=3)
    compiled = generate_tokens(model, [prompt], max_new_tokens=8, logprobs=True, compile=True)[0]
    eager = generate_tokens(model, [prompt], max_new_tokens=8, logprobs=True)[0]
    assert decomposed
    assert compiled.tokens == eager.tokens
    assert compiled.logprobs == pytest.approx(eager.logprobs, abs=0.05)
    prompts = prompts_of([5, 3], seed=4)  # two rows: the dequantized matmul (inductor's own lowering fails)
    assert [r.tokens for r in generate_tokens(model, prompts, max_new_tokens=6, compile=True)] == \
        [r.tokens for r in generate_tokens(model, prompts, max_new_tokens=6)]
