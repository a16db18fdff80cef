"""Serving on one GPU: herd's engine at concurrency 64 vs HF transformers `generate` in static batches of 64,
Llama 3 8B architecture with random bf16 weights.

    python benchmarks/serve_gpu.py [--requests 256] [--concurrency 64] [--runs 1]    # one H100
    python benchmarks/serve_gpu.py --dry-run                                            # CPU, tiny model

Workload and figures as in `serve_throughput.py` (whose functions it reuses): random prompts of 128..512 tokens,
outputs of 64..512, TTFT / TPOT / ITL / output tokens/s. Each model gets its own random weights (the figures do
not depend on them). HF runs every batch to its longest request; herd honours Llama 3's stop tokens, so a
request that samples one ends early and only the tokens produced are counted. `--dry-run` runs the same path
with the tiny preset on the CPU, to check the script without a GPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import transformers
from serve_throughput import run_herd, run_hf, summarize, workload
from transformers import LlamaConfig, LlamaForCausalLM

from herd.checkpoint.hf_format import config_to_hf
from herd.model import build_model, preset
from herd.serve import Engine, EngineConfig
from herd.tokenizer import Tokenizer, default_tokenizer_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--dry-run", action="store_true", help="tiny model on the CPU, a few requests")
    args = parser.parse_args()
    if args.dry_run:
        name, device, requests, concurrency = "tiny", torch.device("cpu"), 8, 4
        prompts, outputs = (16, 48), (8, 32)
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device; pass --dry-run to check the script on the CPU")
        name, device, requests, concurrency = "llama3-8b", torch.device("cuda"), args.requests, args.concurrency
        prompts, outputs = (128, 512), (64, 512)
    dtype = torch.bfloat16
    config = preset(name)
    tok = Tokenizer(default_tokenizer_path())
    torch.manual_seed(0)
    torch.set_default_dtype(dtype)  # both models are built in bf16 on the device: no fp32 copy of 8B weights
    model = build_model(config, device=device, dtype=dtype).eval()
    with torch.device(device):
        hf = LlamaForCausalLM(LlamaConfig(**config_to_hf(config, dtype, tok))).eval()
    torch.set_default_dtype(torch.float32)
    hf.generation_config.eos_token_id = None  # static batches run to their longest request
    longest = prompts[1] + outputs[1]
    engine = Engine(model, tok, EngineConfig(max_running=concurrency, kv_tokens=concurrency * longest,
                                             max_step_tokens=max(2048, concurrency)))
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"
    print(f"{name}, {model.num_params() / 1e9:.2f}B parameters, bf16, random weights, on {device_name}; torch "
          f"{torch.__version__}, transformers {transformers.__version__}; {requests} requests, prompts "
          f"{prompts[0]}..{prompts[1]}, outputs {outputs[0]}..{outputs[1]} tokens, concurrency {concurrency}")
    warm = workload(2, seed=1, vocab=config.vocab_size, prompts=prompts, outputs=(4, 8))
    run_herd(engine, warm, concurrency)
    run_hf(hf, warm, 2)
    results: dict[str, list[dict[str, float]]] = {"herd": [], "HF": []}
    for run in range(args.runs):
        batch = workload(requests, seed=run, vocab=config.vocab_size, prompts=prompts, outputs=outputs)
        for label in ("herd", "HF"):
            _sync(device)
            traces, seconds = run_herd(engine, batch, concurrency) if label == "herd" else run_hf(hf, batch, concurrency)
            _sync(device)
            results[label].append(summarize(traces, seconds))
    print(f"{'engine':6} {'TTFT p50':>9} {'TTFT p99':>9} {'TPOT p50':>9} {'ITL p50':>8} {'ITL p99':>8} "
          f"{'out tok/s':>10}   (ms; median of {args.runs} run(s))")
    medians = {label: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for label, runs in results.items()}
    for label, m in medians.items():
        print(f"{label:6} {m['ttft_p50']:9.1f} {m['ttft_p99']:9.1f} {m['tpot_p50']:9.2f} {m['itl_p50']:8.2f} "
              f"{m['itl_p99']:8.2f} {m['tok_s']:10.1f}")
    print(f"herd / HF output tokens/s: {medians['herd']['tok_s'] / medians['HF']['tok_s']:.2f}x; TTFT p50 "
          f"{medians['herd']['ttft_p50'] / medians['HF']['ttft_p50']:.2f}x HF's")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main()
