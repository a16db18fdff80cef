"""benchmarks/decode_profile.py: its bound counts the bytes each decoded token reads, and the script runs end to end."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
from torch import nn
from decode_profile import streamed_bytes

from herd.model import build_model, preset
from herd.serve.quantize import quantize

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_streamed_bytes_counts_int8_weights_and_scales():
    model = build_model(preset("tiny"))
    linear = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
    norms = [p for name, p in model.layers.named_parameters() if "norm" in name]
    assert streamed_bytes(model) == 4 * (sum(w.numel() for w in linear) + sum(p.numel() for p in norms))
    int8 = quantize(copy.deepcopy(model), "int8")
    scales = sum(w.shape[0] for w in linear)
    assert streamed_bytes(int8) == sum(w.numel() for w in linear) + 4 * scales + 4 * sum(p.numel() for p in norms)


@pytest.mark.slow
def test_decode_profile_runs_on_the_tiny_preset():
    flags = ["--preset", "tiny", "--runs", "1", "--prompt-tokens", "8", "--new-tokens", "4", "--top", "3"]
    result = subprocess.run([sys.executable, str(BENCHMARKS / "decode_profile.py"), *flags], check=False,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    for path in ("decode-f32", "decode-int8", "prefill-f32", "serve-c1"):
        assert f"\n{path} " in result.stdout and f"{path}: top ops" in result.stdout
