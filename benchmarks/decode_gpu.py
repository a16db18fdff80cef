"""herd on one GPU: batch-1 greedy decoding of the Llama 3 8B architecture with random bf16 weights.

Prints prefill and decode tokens/s, eager and with the decode step compiled (CUDA graphs), and the fraction of
the bandwidth bound: weight bytes read per token / bandwidth measured here (a device copy and a one-row
matmul over 2 GiB). Needs only torch (+ triton) and this repo: `python benchmarks/decode_gpu.py`;
`python benchmarks/decode_gpu.py --device cpu --preset tiny` is a smoke run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from herd.generation import generate_tokens
from herd.model import Transformer, build_model, preset

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def random_model(name: str, device: torch.device, dtype: torch.dtype) -> Transformer:
    """The preset's architecture built on the meta device, then allocated and filled on `device` directly."""
    model = build_model(preset(name), device="meta", dtype=dtype).to_empty(device=device).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(0.0, 0.02)
            else:
                param.fill_(1.0)  # the norms
    return model


def bandwidths(device: torch.device, dtype: torch.dtype, dim: int, runs: int) -> tuple[float, float]:
    """Bytes/s of a device-to-device copy (read + write) and of a one-row matmul, each over 2 GiB."""
    nbytes = 2 << 30 if device.type == "cuda" else 256 << 20
    buffers = torch.empty(2, nbytes, dtype=torch.uint8, device=device)
    copy = statistics.median(seconds(lambda: buffers[1].copy_(buffers[0]), device) for _ in range(runs + 1))
    buffers = None  # free it before the matmul's weight
    weight = torch.randn(nbytes // (dim * dtype.itemsize), dim, device=device, dtype=dtype)
    row = torch.randn(1, dim, device=device, dtype=dtype)
    matmul = statistics.median(seconds(lambda: F.linear(row, weight), device) for _ in range(runs + 1))
    return 2 * nbytes / copy, weight.numel() * dtype.itemsize / matmul


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="llama3-8b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bf16", choices=DTYPES)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    device, dtype, n = torch.device(args.device), DTYPES[args.dtype], args.new_tokens
    model = random_model(args.preset, device, dtype)
    prompt = torch.randint(0, model.config.vocab_size, (args.prompt_len,)).tolist()
    weights = [p for p in model.layers.parameters() if p.dim() == 2] + [model.output.weight]
    nbytes = sum(p.numel() * p.element_size() for p in weights)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{args.preset} {args.dtype} on {name}, batch 1, prompt {args.prompt_len}, decode {n}, "
          f"median of {args.runs} runs; torch {torch.__version__}")

    rates = {}
    for label, compile in (("herd eager", False), ("herd compiled", True)):
        def run(tokens: int, compile: bool = compile) -> float:
            return seconds(lambda: generate_tokens(model, [prompt], max_new_tokens=tokens, compile=compile), device)

        warmup = run(n)  # compiles and records the CUDA graph on the compiled pass
        times = [(run(1), run(n)) for _ in range(args.runs)]
        prefill = args.prompt_len / statistics.median(first for first, _ in times)
        decode = (n - 1) / statistics.median(full - first for first, full in times)
        rates[label] = (prefill, decode, warmup)

    copy_bw, matmul_bw = bandwidths(device, dtype, model.config.dim, args.runs)
    print(f"weights read per token {nbytes / 1e9:.2f} GB; copy {copy_bw / 1e9:.0f} GB/s, "
          f"one-row matmul {matmul_bw / 1e9:.0f} GB/s")
    print(f"{'engine':14} {'prefill tok/s':>13} {'decode tok/s':>12} {'ms/token':>8} {'of copy bound':>13} "
          f"{'of matmul bound':>15} {'first call s':>12}")
    for label, (prefill, decode, warmup) in rates.items():
        print(f"{label:14} {prefill:13.0f} {decode:12.1f} {1e3 / decode:8.2f} {decode * nbytes / copy_bw:13.0%} "
              f"{decode * nbytes / matmul_bw:15.0%} {warmup:12.1f}")


if __name__ == "__main__":
    main()
