"""herd against HF transformers: batch-1 greedy decoding of the llama3-125m preset on CPU, fp32 and bf16.

Prints prefill and decode tokens/s (median of runs), the herd/HF ratios, and the fraction of the memory bound.

All models hold the same random weights (herd -> HF through herd.checkpoint's HF writer). HF runs two ways, each
printed with its settings: its default `generate` (DynamicCache, eager, SDPA attention), and as HF's guide
"Optimizing inference" recommends for fast decoding: a static KV cache (`generation_config.cache_implementation =
"static"`) with `model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)` (on CPU the
mode's CUDA graphs do not apply; inductor compiles one graph for the prefill and one for the decode step). herd
runs eager and with its decode step compiled (`compile=True`). Each side's one-time compile is reported apart.
Prefill rate = prompt tokens / time of a 1-token generation; decode rate = (N - 1) / (time of an N-token
generation - that). The bound: each decoded token reads every linear weight and the output head once; it is
taken against two bandwidths measured here on one weight of the same total size: a plain torch matmul of one row
(`F.linear`) and a plain streaming read (an int32 `amax`).
Whenever herd decodes more than 2x a peer, the peer is profiled (torch.profiler, per decoded token) and its top ops
printed beside the ratio: a ratio that large more often means a slow peer setting than a fast herd.
Run from the repo root: `python benchmarks/decode_cpu.py` (about 8 minutes on 2 idle cores, and a minute or two more
for each peer profiled).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import transformers
from cpu_info import cpu_line
from transformers import LlamaForCausalLM

import herd.checkpoint as ckpt
from herd.generation import generate_tokens
from herd.model import Transformer, build_model, preset
from herd.tokenizer import Tokenizer, default_tokenizer_path

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def weight_bytes_per_token(model: Transformer) -> int:
    """Bytes of every linear weight of the blocks plus the output head (which may be the embedding table)."""
    weights = [p for p in model.layers.parameters() if p.dim() == 2] + [model.output.weight]
    return sum(p.numel() * p.element_size() for p in weights)


def bandwidths(nbytes: int, dim: int, dtype: torch.dtype, runs: int) -> tuple[float, float]:
    """Bytes/s of a one-row matmul and of a plain read over one [rows, dim] weight of `nbytes` bytes."""
    weight = torch.randn(nbytes // (dim * dtype.itemsize), dim).to(dtype)
    row = torch.randn(1, dim, dtype=dtype)
    matmul = statistics.median(seconds(lambda: F.linear(row, weight)) for _ in range(runs + 1))
    words = weight.view(torch.int32)
    read = statistics.median(seconds(words.amax) for _ in range(runs + 1))
    return nbytes / matmul, nbytes / read


def hf_models(hf_dir: str, dtype: torch.dtype) -> dict[str, LlamaForCausalLM]:
    """HF's default generate, and the static cache + torch.compile of HF's "Optimizing inference" guide."""
    default = LlamaForCausalLM.from_pretrained(hf_dir, dtype=dtype).eval()
    static = LlamaForCausalLM.from_pretrained(hf_dir, dtype=dtype).eval()
    static.generation_config.cache_implementation = "static"
    static.forward = torch.compile(static.forward, mode="reduce-overhead", fullgraph=True)
    return {"HF default": default, "HF static+comp": static}


def hf_settings(models: dict[str, LlamaForCausalLM]) -> list[str]:
    cache = {"HF default": "DynamicCache, eager", "HF static+comp": "StaticCache, torch.compile(model.forward, "
             "mode='reduce-overhead', fullgraph=True)"}
    return [f"{name}: generate(do_sample=False), {cache[name]}, attention {hf.config._attn_implementation}, "
            f"{hf.dtype}, {torch.get_num_threads()} threads" for name, hf in models.items()]


def compare(hf_dir: str, name: str, dtype_name: str, prompt: list[int], n: int, runs: int) -> list[str]:
    """Table rows for one dtype: herd eager, herd compiled, HF default and HF static+compiled, timed interleaved."""
    dtype, config = DTYPES[dtype_name], preset(name)
    model = build_model(config, dtype=dtype).eval()
    model.init_weights(0)
    hfs = hf_models(hf_dir, dtype)
    ids = torch.tensor([prompt])

    def herd_run(tokens: int, compile: bool) -> float:
        return seconds(lambda: generate_tokens(model, [prompt], max_new_tokens=tokens, compile=compile))

    def hf_run(hf: LlamaForCausalLM, tokens: int) -> float:
        with torch.inference_mode():
            return seconds(lambda: hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                               max_new_tokens=tokens, min_new_tokens=tokens))

    engines: dict[str, Callable[[int], float]] = {
        "herd": lambda t: herd_run(t, False), "herd compiled": lambda t: herd_run(t, True),
        **{name: (lambda t, hf=hf: hf_run(hf, t)) for name, hf in hfs.items()}}
    compile_s = {"herd compiled": engines["herd compiled"](n)}  # its decode step, once per model and batch size
    # the prefill's graph and the step's; later calls reuse them (HF keeps its cache at the longest length asked)
    compile_s["HF static+comp"] = engines["HF static+comp"](n)
    for run in engines.values():
        run(n)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in engines}
    for _ in range(runs):
        for name, run in engines.items():  # interleaved, so background load hits all alike
            times[name].append((run(1), run(n)))
    nbytes = weight_bytes_per_token(model)
    matmul_bw, read_bw = bandwidths(nbytes, config.dim, dtype, runs)
    rates = {name: (len(prompt) / statistics.median(first for first, _ in t),
                    (n - 1) / statistics.median(full - first for first, full in t)) for name, t in times.items()}
    hf_default, hf_static = rates["HF default"][1], rates["HF static+comp"][1]
    rows = [f"{dtype_name:5} {name:15} {prefill:13.0f} {decode:12.1f} {decode / hf_default:10.2f}x "
            f"{decode / hf_static:14.2f}x {decode * nbytes / matmul_bw:15.0%} {decode * nbytes / read_bw:13.0%}"
            for name, (prefill, decode) in rates.items()]
    rows.append(f"{dtype_name:5} weights read per token {nbytes / 1e6:.0f} MB; matmul {matmul_bw / 1e9:.1f} GB/s, "
                f"read {read_bw / 1e9:.1f} GB/s; first calls (compiles): "
                + ", ".join(f"{name} {s:.0f} s" for name, s in compile_s.items()))
    rows += [f"{dtype_name:5} {line}" for line in hf_settings(hfs)]
    best = max(decode for name, (_, decode) in rates.items() if name.startswith("herd"))
    for name in hfs:
        ratio = best / rates[name][1]
        if ratio > PROFILE_ABOVE:
            rows += [f"{dtype_name:5} {line}" for line in peer_profile(name, engines[name], n, runs, ratio)]
    return rows


PROFILE_ABOVE = 2.0
"""herd's decode this many times a peer's or more: the peer is profiled before the ratio is believed (issue 29)."""


def peer_profile(name: str, run: Callable[[int], float], n: int, runs: int, ratio: float, top: int = 8) -> list[str]:
    """Where a peer's decode time goes: torch.profiler's self CPU time per op of an n-token generation less a 1-token
    one, per decoded token (decode_profile.op_times, medians of `runs`), its `top` ops."""
    from decode_profile import op_times, per_token

    ops = per_token(op_times(lambda: run(n), runs), op_times(lambda: run(1), runs), n - 1)
    total = sum(ops.values())
    lines = [f"{name} profiled (herd {ratio:.2f}x it): {total:.2f} ms of op self time per decoded token, top ops:"]
    for op, ms in sorted(ops.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {op[:40]:40} {ms:7.3f} ms {ms / total:6.1%}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--preset", default="llama3-125m", help="herd model preset (tiny: a quick smoke run)")
    args = parser.parse_args()
    prompt = torch.randint(0, 128000, (args.prompt_len,), generator=torch.Generator().manual_seed(0)).tolist()
    print(cpu_line())
    print(f"{args.preset}, batch 1, prompt {args.prompt_len}, decode {args.new_tokens}, {torch.get_num_threads()} "
          f"threads, torch {torch.__version__}, transformers {transformers.__version__}, median of {args.runs} runs")
    rows = []
    with tempfile.TemporaryDirectory() as hf_dir:
        reference = build_model(preset(args.preset))
        reference.init_weights(0)
        ckpt.save(reference, Tokenizer(default_tokenizer_path()), hf_dir, format="hf")
        del reference
        for dtype_name in args.dtypes.split(","):
            rows += compare(hf_dir, args.preset, dtype_name, prompt, args.new_tokens, args.runs)
    print(f"{'dtype':5} {'engine':15} {'prefill tok/s':>13} {'decode tok/s':>12} {'vs HF dflt':>11} "
          f"{'vs HF st+comp':>15} "
          f"{'of matmul bound':>15} {'of read bound':>13}")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
