"""herd's serving engine with and without its compiled one-request step (herd.serve.compiled_step), in one go.

    python benchmarks/serve_compiled.py [--concurrency 1,8,16] [--runs 3] [--threads 2]

Model: the llama3-125m preset (random weights, fp32), prepacked linears as `herd serve` packs them (keeping the
plain weights the compiled step reads). Workload and figures as benchmarks/serve_throughput.py (closed loop,
`--batches` x c requests a level, prompts 32..160 tokens, outputs 16..`--max-output` tokens). Each level runs the
eager engine then the compiled one, `--runs` times interleaved; the table shows medians (output tokens per
CPU-second of this process too: steadier than wall time on a shared machine, best read at `--threads 1`) and the
start-up compile (warm-up) time of the compiled engine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_throughput import run_herd, summarize, workload  # noqa: E402

from herd.model import build_model  # noqa: E402
from herd.model.presets import preset  # noqa: E402
from herd.serve import Engine, EngineConfig  # noqa: E402
from herd.serve.packed import pack_linears  # noqa: E402
from herd.tokenizer import Tokenizer, default_tokenizer_path  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", default="1,8,16")
    parser.add_argument("--batches", type=int, default=2, help="requests per level: this many times c (at least 4)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-output", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tok = Tokenizer(default_tokenizer_path())
    model = build_model(preset("llama3-125m")).eval()
    model.init_weights(0)
    pack_linears(model, keep_weights=True)
    levels = [int(c) for c in args.concurrency.split(",")]
    engines = {}
    for c in levels:
        for compiled in (False, True):
            start = time.perf_counter()
            engines[c, compiled] = Engine(model, tok, EngineConfig(max_running=c, max_step_tokens=max(256, c),
                                                                   compile=compiled))
            if compiled:
                print(f"c={c}: compiled engine start-up {time.perf_counter() - start:.1f} s "
                      f"({engines[c, compiled].decode_path})", flush=True)
    print(f"llama3-125m fp32 (random weights), prepacked linears, {args.threads} thread(s), torch {torch.__version__}; "
          f"prompts 32..160, outputs 16..{args.max_output}; median of {args.runs} runs", flush=True)
    warm = workload(2, seed=1, outputs=(16, 32))
    for engine in engines.values():
        run_herd(engine, warm, 2)
    results: dict[tuple[int, bool], list[dict[str, float]]] = {}
    for run in range(args.runs):
        for c in levels:
            requests = workload(max(c * args.batches, 4), seed=100 * run + c, outputs=(16, args.max_output))
            for compiled in (False, True):
                cpu = time.process_time()
                traces, seconds = run_herd(engines[c, compiled], requests, c)
                figures = summarize(traces, seconds)
                figures["tok_cpu_s"] = sum(len(t.tokens) for t in traces) / (time.process_time() - cpu)
                results.setdefault((c, compiled), []).append(figures)
    print(f"{'conc':>4} {'step':9} {'TTFT p50':>9} {'TPOT p50':>9} {'out tok/s':>9} {'vs eager':>8} "
          f"{'tok/CPU-s':>9} {'vs eager':>8}   (ms unless noted)")
    for c in levels:
        medians = {compiled: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                   for compiled, runs in ((False, results[c, False]), (True, results[c, True]))}
        for compiled, m in medians.items():
            ratio, cpu_ratio = (m[k] / medians[False][k] for k in ("tok_s", "tok_cpu_s"))
            print(f"{c:4d} {'compiled' if compiled else 'eager':9} {m['ttft_p50']:9.1f} {m['tpot_p50']:9.1f} "
                  f"{m['tok_s']:9.1f} {ratio:7.2f}x {m['tok_cpu_s']:9.1f} {cpu_ratio:7.2f}x")


if __name__ == "__main__":
    main()
