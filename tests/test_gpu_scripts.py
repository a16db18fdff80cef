"""The GPU benchmark scripts run their own code path on CPU, so a session lent a GPU for minutes finds them working."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

DRY_RUNS = {
    "train_gpu.py": (["--dry-run", "--documents", "3"], "3 document(s) per row"),
    "serve_gpu.py": (["--dry-run"], "herd / HF output tokens/s"),
    "post_lora_gpu.py": (["--dry-run"], "losses:"),
    "decode_gpu.py": (["--device", "cpu", "--preset", "tiny"], "herd compiled"),
    "loss_gpu.py": (["--dry-run"], "| herd (compiled chunks) |"),
    "tp_inference_gpu.py": (["--dry-run"], "| eager |"),
}


@pytest.mark.parametrize("script", list(DRY_RUNS))
def test_gpu_benchmark_runs_on_cpu(script):
    flags, expected = DRY_RUNS[script]
    command = [sys.executable, str(BENCHMARKS / script), *flags]
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert expected in result.stdout
