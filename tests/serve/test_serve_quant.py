"""int8 weight-only quantization: the kernel path equals its plain fallback and stays close to fp32."""

from __future__ import annotations

import copy

import torch

import herd
from herd.serve.quantize import Int8Linear, quantize_int8


def test_int8_kernel_matches_dequantized_fallback():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 96, bias=False)
    quant = Int8Linear(linear)
    x = torch.randn(3, 5, 64)
    dequantized = quant.weight.float() * quant.scale[:, None]
    assert (dequantized - linear.weight).abs().max() <= quant.scale.max() / 2 + 1e-6
    # The CPU kernel takes bf16 activations (and bf16 scales): compare at bf16 precision.
    torch.testing.assert_close(quant(x), x @ dequantized.T, rtol=2e-2, atol=2e-2)


def test_quantized_model_stays_close_to_fp32():
    model, tok = herd.load("tiny")
    quantized = quantize_int8(copy.deepcopy(model))
    assert isinstance(quantized.output, Int8Linear) and isinstance(quantized.layers[0].attention.wq, Int8Linear)
    tokens = torch.tensor([tok.encode("The quick brown fox jumps over the lazy dog.", bos=True)])
    with torch.inference_mode():
        reference, approx = model(tokens).log_softmax(-1), quantized(tokens).log_softmax(-1)
    kl = (reference.exp() * (reference - approx)).sum(-1).mean()
    assert kl < 1e-2
