"""herd tensor-parallel inference on several GPUs: Llama 3 70B (bf16) and 405B (int8 / fp8 weights) at tp=8 with
random weights, one torchrun rank per GPU (NCCL).

    torchrun --nproc-per-node 8 benchmarks/tp_inference_gpu.py --preset llama3-70b
    torchrun --nproc-per-node 8 benchmarks/tp_inference_gpu.py --preset llama3-405b --quantize fp8   # or int8
    python benchmarks/tp_inference_gpu.py --dry-run   # 2 CPU ranks (gloo), tiny preset, fp32: the code path only

Each rank allocates only its slice: the model is built on the meta device, cut by `parallelize`, then materialised
one block at a time and, with --quantize, each block's linears are quantized before the next block exists (a 405B
rank's bf16 slice, ~101 GB, never sits whole on an 80 GB GPU). herd's memory plan is printed first. Rank 0 prints:
decode tokens/s at batch 1 (eager, and compiled with CUDA graphs), the serving engine's output tokens/s at
--concurrency requests, and the share of the bandwidth bound = decode tok/s x weight bytes a rank reads per step /
this GPU's measured copy bandwidth (decode_gpu.py's measure). The all-reduces are outside the bound: their latency
is part of the share that is lost.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from decode_gpu import DTYPES, bandwidths, seconds  # noqa: E402

from herd.generation import generate_tokens  # noqa: E402
from herd.model import Transformer, build_model, preset  # noqa: E402
from herd.model.tensor_parallel import init_tensor_parallel, parallelize, tp_device  # noqa: E402
from herd.serve import Engine, EngineConfig, RequestParams  # noqa: E402
from herd.serve.memory_plan import check_plan, device_memory, plan_memory  # noqa: E402
from herd.serve.quantize import QUANTIZED  # noqa: E402
from herd.tokenizer import Tokenizer, default_tokenizer_path  # noqa: E402

DRY_RUN = ["--preset", "tiny", "--device", "cpu", "--dtype", "fp32", "--quantize", "int8", "--prompt-len", "8",
           "--new-tokens", "4", "--runs", "1", "--concurrency", "2", "--no-compile"]


@torch.no_grad()
def random_rank_model(name: str, tp, device: torch.device, dtype: torch.dtype, quantize: str | None) -> Transformer:
    """This rank's slice of the preset with random weights, materialised block by block (quantized as it goes)."""
    model = parallelize(build_model(preset(name), device="meta", dtype=dtype), tp)
    make = QUANTIZED[quantize] if quantize else None
    for module in (model.tok_embeddings, model.norm, *model.layers, model.output):
        module.to_empty(device=device)
        for param in module.parameters():
            if param.dim() == 2:
                param.normal_(0.0, 0.02)
            else:
                param.fill_(1.0)  # the norms
        # Transformer.replace_linears does this for the whole model at once, which would hold every bf16 block.
        for parent in (module.attention, module.feed_forward) if make and hasattr(module, "attention") else ():
            for child_name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(parent, child_name, make(child))
    if make:
        model.output = make(model.output)
    model.place_buffers(device)
    return model.eval()


def step_bytes(model: Transformer) -> int:
    """Bytes of weights (and quantization scales) this rank reads in one decode step: its blocks' linears and head."""
    named = [*model.layers.named_parameters(), *model.layers.named_buffers(), *model.output.named_parameters(),
             *model.output.named_buffers()]
    return sum(t.numel() * t.element_size() for name, t in named if "norm" not in name)


def serving_rate(model: Transformer, tp, prompt_len: int, new: int, concurrency: int) -> float | None:
    """Output tokens/s of the engine at `concurrency` greedy requests (rank 0; the other ranks follow its steps)."""
    config = EngineConfig(max_running=concurrency, kv_tokens=concurrency * (prompt_len + new + 16))
    engine = Engine(model, Tokenizer(default_tokenizer_path()), config)
    if tp.rank > 0:
        engine.follow()
        return None
    prompts = torch.randint(0, 128000, (concurrency, prompt_len), generator=torch.Generator().manual_seed(1))
    rates = []
    for round_ in range(2):  # the first round warms up
        for i, prompt in enumerate(prompts.tolist()):
            engine.add_request(f"{round_}-{i}", prompt, RequestParams(max_tokens=new))
        tokens, start = 0, time.perf_counter()
        while engine.has_unfinished():  # each step ends on the host (its sampled ids), so no extra sync is needed
            tokens += sum(out.token_id is not None for out in engine.step())
        rates.append(tokens / (time.perf_counter() - start))
    engine.close()
    return rates[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="llama3-70b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bf16", choices=DTYPES)
    parser.add_argument("--quantize", choices=tuple(QUANTIZED), default=None)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true", help="eager decode only")
    parser.add_argument("--dry-run", action="store_true", help="2 CPU ranks, tiny preset: checks the code path")
    args = parser.parse_args()
    if args.dry_run:  # start 2 gloo ranks on this script
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                   str(Path(__file__).resolve()), *DRY_RUN]
        raise SystemExit(subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False).returncode)
    tp = init_tensor_parallel(int(os.environ.get("WORLD_SIZE", "1")), args.device)
    if tp is None:
        raise SystemExit("run under torchrun: torchrun --nproc-per-node 8 benchmarks/tp_inference_gpu.py ...")
    device, dtype = tp_device(tp, args.device), DTYPES[args.dtype]
    config, n = preset(args.preset), args.new_tokens
    plan = plan_memory(config, tp=tp.world, dtype=str(dtype).removeprefix("torch."), quantize=args.quantize,
                       context=args.prompt_len + n, batch=args.concurrency, available=device_memory(device))
    if tp.rank == 0:
        check_plan(config, plan)
    model = random_rank_model(args.preset, tp, device, dtype, args.quantize)
    prompt = torch.randint(0, config.vocab_size, (args.prompt_len,), generator=torch.Generator().manual_seed(0))
    nbytes = step_bytes(model)

    rates = {}
    for label, compile in (("eager", False), ("compiled", True)):
        if compile and args.no_compile:
            continue

        def run(tokens: int, compile: bool = compile) -> float:
            return seconds(lambda: generate_tokens(model, [prompt.tolist()], max_new_tokens=tokens, compile=compile),
                           device)

        try:
            run(n)  # warm-up: compiles and records the CUDA graphs on the compiled pass
        except Exception as error:  # noqa: BLE001 - reported in the table, the eager figures stand
            rates[label] = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:100]}"
            continue
        times = [(run(1), run(n)) for _ in range(args.runs)]
        rates[label] = (n - 1) / statistics.median(full - first for first, full in times)
    serving = serving_rate(model, tp, args.prompt_len, n, args.concurrency)
    copy_bw, _ = bandwidths(device, dtype, config.dim, args.runs)
    if tp.rank == 0:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        print(f"{args.preset} {args.dtype} weights {args.quantize or 'unquantized'}, tp={tp.world} on {name}; batch 1 "
              f"decode of {n} tokens after {args.prompt_len}, median of {args.runs}; torch {torch.__version__}")
        print(f"weights read per step per rank {nbytes / 1e9:.2f} GB; copy bandwidth {copy_bw / 1e9:.0f} GB/s a GPU")
        print("| decode | tok/s | ms/token | of bandwidth bound |")
        print("|---|---|---|---|")
        for label, rate in rates.items():
            if isinstance(rate, str):
                print(f"| {label} | {rate} | | |")
            else:
                print(f"| {label} | {rate:.1f} | {1e3 / rate:.2f} | {rate * nbytes / copy_bw:.0%} |")
        print(f"serving output tokens/s at concurrency {args.concurrency}: {serving:.1f}")
    tp.close()


if __name__ == "__main__":
    main()
