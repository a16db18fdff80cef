"""One line naming the CPU a benchmark ran on: model, logical cores and the SIMD flags its kernels care about."""

from __future__ import annotations

import os
from pathlib import Path

FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16",
         "amx_int8")


def cpu_line() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    return f"CPU: {model}, {os.cpu_count()} logical cores; flags: {' '.join(f for f in FLAGS if f in flags)}"
