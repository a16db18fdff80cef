"""Where herd's time goes on the CPU paths where llama.cpp is faster (issue 29), and what bounds them.

Model: the llama3-125m preset (random weights, seed 0), batch 1, the threads given. Paths (`--paths`):
- decode-f32, decode-int8 (weight-only, herd.serve.quantize), decode-bf16, and each -compiled: tokens/s as
  benchmarks/decode_cpu.py times them; the bound is streaming: every decoded token reads each weight of the blocks
  and the output head once, so bound tok/s = bandwidth / weight bytes per token. Two bandwidths, measured here on
  a buffer of the weights' size: a plain copy (`dst.copy_(src)`, bytes read + written, as STREAM's Copy counts
  them) and a plain read (an int32 `amax`, decode_cpu.bandwidths).
- prefill-f32, prefill-bf16: the prompt in one forward; compute-bound: FLOPs per token = 2 x the blocks' linear
  weights (the head runs on the last position only) + attention's 2 x 2 x layers x dim x (prompt/2) average keys; the
  bound is the FLOP/s of one GEMM of the prompt's rows by the model's feed-forward weight as herd runs it
  (`cpu_tuning.linear`), measured here. `--ab` times the plain path (HERD_CPU_PLAIN=1) alternating with it in the same
  process and prints it as `<path>-plain`.
- serve-c1 (and serve-c1-compiled where the engine has a compiled step): herd's serving Engine as `herd serve` runs
  it on CPU (prepacked linears), one request in flight, fixed 128-token prompts and 64 new tokens; tokens/s is
  output tokens / wall time (its prefills included, as serve_throughput.py counts it); bound as for decode. Each
  serve path also prints its decode steps' time per token split into the engine's parts (scheduling, the forward,
  sampling with detokenising, the rest of `Engine.step`) and the voluntary context switches per token of the
  process's threads (OpenMP threads sleeping at barriers: herd.serve.async_engine). serve-c1-compiled-thread steps
  the engine on a second thread, as `herd serve` did before its engine moved to the loading thread (its ops are not
  profiled: torch.profiler records the calling thread's); serve-c1-int8-compiled(-thread) serve int8 weights.
Top ops: torch.profiler's self CPU time per op. For a decode path, the profile of a 1-token generation is subtracted
from that of an N-token one, so the table holds the decode steps alone (per decoded token); prefill: the 1-token
generation; serving: the whole run per output token. Rates and each op's time are medians of `--runs`.
Run from the repo root: `python benchmarks/decode_profile.py` (about 3 minutes on 2 idle cores).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import copy
import dataclasses
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cpu_info import cpu_line
from decode_cpu import bandwidths, seconds
from serve_throughput import run_herd, summarize, workload

import herd.serve.engine as engine_module
from herd.generation import generate_tokens
from herd.model import Transformer, build_model, cpu_tuning, preset
from herd.serve import Engine, EngineConfig
from herd.serve.packed import pack_linears
from herd.serve.quantize import quantize
from herd.tokenizer import Tokenizer, default_tokenizer_path

DECODE = {"decode-f32": ("f32", False), "decode-int8": ("int8", False), "decode-bf16": ("bf16", False),
          "decode-f32-compiled": ("f32", True), "decode-bf16-compiled": ("bf16", True),
          "decode-int8-compiled": ("int8", True)}
SERVE = {"serve-c1": ("f32", False, False), "serve-c1-compiled": ("f32", True, False),
         "serve-c1-compiled-thread": ("f32", True, True), "serve-c1-int8-compiled": ("int8", True, False),
         "serve-c1-int8-compiled-thread": ("int8", True, True)}
"""Path -> (weights, the one-request step compiled?, the engine stepped on a second thread?)."""
PREFILL = {"prefill-f32": "f32", "prefill-bf16": "bf16"}
DEFAULT_PATHS = "decode-f32,decode-int8,prefill-f32,serve-c1"


@dataclasses.dataclass
class Measured:
    """One measured path: its rate, the profiled self time per token of each op (ms), and its bound."""

    name: str
    tok_s: float
    ops: dict[str, float]
    bound: str
    bound_tok_s: float
    breakdown: str = ""
    """Serve paths: where a decode step's time goes, per token."""


def streamed_bytes(model: Transformer) -> int:
    """Bytes of every weight (parameters and buffers: int8 weights and their scales too) of the blocks and head."""
    tensors = [*model.layers.parameters(), *model.layers.buffers(), *model.output.parameters(),
               *model.output.buffers()]
    return sum(t.numel() * t.element_size() for t in {id(t): t for t in tensors}.values())


def copy_bandwidth(nbytes: int, runs: int) -> float:
    """Bytes/s of a plain copy of an `nbytes` buffer, counting the bytes read and the bytes written."""
    src = torch.randint(-(2**31), 2**31 - 1, (nbytes // 4,), dtype=torch.int32)
    dst = torch.empty_like(src)
    return 2 * nbytes / statistics.median(seconds(lambda: dst.copy_(src)) for _ in range(runs + 1))


@torch.inference_mode()
def gemm_flops(rows: int, dim: int, hidden: int, runs: int, dtype: torch.dtype) -> float:
    """FLOP/s of one [rows, dim] x [dim, hidden] inference GEMM as herd's projections run it."""
    x, w = torch.randn(rows, dim, dtype=dtype), torch.randn(hidden, dim, dtype=dtype)
    cpu_tuning.linear(x, w)
    return 2 * rows * dim * hidden / statistics.median(
        seconds(lambda: cpu_tuning.linear(x, w)) for _ in range(runs + 2))


def op_times(fn: Callable[[], object], runs: int) -> dict[str, float]:
    """Self CPU milliseconds per op name of one call of `fn`: the median over `runs` profiled calls."""
    profiles = []
    for _ in range(runs):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            fn()
        profiles.append({e.key: e.self_cpu_time_total / 1e3 for e in prof.key_averages()})
    return {op: statistics.median(p.get(op, 0.0) for p in profiles) for op in set().union(*profiles)}


def per_token(many: dict[str, float], one: dict[str, float], tokens: int) -> dict[str, float]:
    return {op: max(t - one.get(op, 0.0), 0.0) / tokens for op, t in many.items()}


def decode_path(name: str, model: Transformer, compile: bool, prompt: list[int], n: int, runs: int,
                bws: dict[str, float]) -> Measured:
    def run(tokens: int) -> Callable[[], object]:
        return lambda: generate_tokens(model, [prompt], max_new_tokens=tokens, compile=compile)

    run(n)()  # warm-up (the compiled path compiles here)
    times = [(seconds(run(1)), seconds(run(n))) for _ in range(runs)]
    rate = (n - 1) / statistics.median(b - a for a, b in times)
    ops = per_token(op_times(run(n), runs), op_times(run(1), runs), n - 1)
    nbytes = streamed_bytes(model)
    bound = ", ".join(f"{k} {v / 1e9:.1f} GB/s" for k, v in bws.items())
    return Measured(name, rate, ops, f"{nbytes / 1e6:.0f} MB/token; {bound}", bws["copy"] / nbytes)


def prefill_path(name: str, model: Transformer, prompt: list[int], runs: int, ab: bool) -> list[Measured]:
    """`name`'s measurement, and with `ab` its plain path's (HERD_CPU_PLAIN=1), timed alternating with it."""
    run = lambda: generate_tokens(model, [prompt], max_new_tokens=1)  # noqa: E731
    before = os.environ.get(cpu_tuning.PLAIN_ENV, "0")
    variants = {name: "0", f"{name}-plain": "1"} if ab else {name: before}
    times: dict[str, list[float]] = {variant: [] for variant in variants}
    for _ in range(runs + 1):  # the first round warms up
        for variant, plain in variants.items():
            os.environ[cpu_tuning.PLAIN_ENV] = plain
            times[variant].append(seconds(run))
    c = model.config
    linear = sum(p.numel() for p in model.layers.parameters() if p.dim() == 2)
    flops = 2 * linear + 2 * 2 * c.n_layers * c.dim * len(prompt) / 2
    hidden = model.layers[0].feed_forward.w1.weight.shape[0]
    measured = []
    for variant, plain in variants.items():
        os.environ[cpu_tuning.PLAIN_ENV] = plain
        ops = {op: t / len(prompt) for op, t in op_times(run, runs).items()}
        peak = gemm_flops(len(prompt), c.dim, hidden, runs, model.output.weight.dtype)
        rate = len(prompt) / statistics.median(times[variant][1:])
        bound = f"{flops / 1e6:.1f} MFLOP/token; GEMM {peak / 1e9:.1f} GFLOP/s"
        measured.append(Measured(variant, rate, ops, bound, peak / flops))
    os.environ[cpu_tuning.PLAIN_ENV] = before
    return measured


def voluntary_switches() -> int:
    """Voluntary context switches (a thread blocking: a sleeping OpenMP thread, a wait for the GIL) of this process's
    threads so far."""
    total = 0
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            lines = (task / "status").read_text().splitlines()
            total += sum(int(line.split()[1]) for line in lines if line.startswith("voluntary_ctxt_switches"))
    return total


class StepSpans:
    """Wall time of the parts of `engine`'s decode steps (one request in flight: one new token a step), taken by
    wrapping the engine's scheduler, forward and sampler on this instance."""

    PARTS = ("schedule", "forward", "sample + detokenise")

    def __init__(self, engine: Engine) -> None:
        self.times: dict[str, list[float]] = {part: [] for part in (*self.PARTS, "step")}
        self.switches = 0
        self._pending: dict[str, float] = {}
        self._plan: list = []
        """The step's (sequence, new tokens) as the scheduler planned it."""
        engine.scheduler.schedule = self._wrap("schedule", self._keep_plan(engine.scheduler.schedule))
        engine._sample = self._wrap("sample + detokenise", engine._sample)
        self._eager = None
        if engine._compiled is not None:
            engine._compiled = self._wrap("forward", engine._compiled)
        else:  # eager steps run through the engine module's `run_segments` (put back by `close`)
            self._eager = engine_module.run_segments
            engine_module.run_segments = self._wrap("forward", self._eager)
        engine.step = self._step(engine.step)

    def close(self) -> None:
        if self._eager is not None:
            engine_module.run_segments = self._eager

    def _wrap(self, part: str, fn: Callable) -> Callable:
        def timed(*args: object, **kwargs: object) -> object:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._pending[part] = time.perf_counter() - start
        return timed

    def _keep_plan(self, schedule: Callable) -> Callable:
        def planned() -> list:
            self._plan[:] = schedule()
            return self._plan
        return planned

    def _step(self, step: Callable) -> Callable:
        def timed() -> object:
            self._pending.clear()
            self._plan.clear()
            switches, start = voluntary_switches(), time.perf_counter()
            outputs = step()
            elapsed = time.perf_counter() - start
            if outputs and self._plan and all(n == 1 for _, n in self._plan):  # a decode step
                self.switches += voluntary_switches() - switches
                self.times["step"].append(elapsed)
                for part in self.PARTS:
                    self.times[part].append(self._pending[part])
            return outputs
        return timed

    def line(self) -> str:
        steps = len(self.times["step"])
        if not steps:
            return "no decode steps timed"
        med = {part: 1e3 * statistics.median(t) for part, t in self.times.items()}
        rest = med["step"] - sum(med[part] for part in self.PARTS)
        parts = ", ".join(f"{part} {med[part]:.2f}" for part in self.PARTS)
        return (f"decode step {med['step']:.2f} ms/token (medians of {steps}): {parts}, "
                f"rest of Engine.step {rest:.2f}; {self.switches / steps:.1f} voluntary context switches/token")


def serve_path(name: str, model: Transformer, tok: Tokenizer, compile: bool, n: int, runs: int,
               bws: dict[str, float], thread: bool = False, int8: bool = False) -> Measured:
    """`model` unpacked: its weights' bytes are the bound's; the engine serves a prepacked copy, as `herd serve`
    (`int8`: a weight-only int8 copy, whose bytes are the bound's). `thread`: the engine steps on a second thread (a
    second OpenMP team), this one having loaded it."""
    extra = {"compile": compile} if "compile" in {f.name for f in dataclasses.fields(EngineConfig)} else {}
    if compile and not extra:
        raise SystemExit(f"{name}: this herd's serving engine has no compiled step")
    if int8:  # as herd serve --quantize int8
        served = quantize(copy.deepcopy(model), "int8")
        nbytes = streamed_bytes(served)
    else:  # as herd serve
        nbytes = streamed_bytes(model)
        served = pack_linears(copy.deepcopy(model), **({"keep_weights": True} if compile else {}))
    engine = Engine(served, tok, EngineConfig(max_running=1, **extra))
    requests = workload(3, seed=0, vocab=128000, prompts=(128, 128), outputs=(n, n))

    def serving(fn: Callable[[], object]) -> object:
        if not thread:
            return fn()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(fn).result()

    serving(lambda: run_herd(engine, requests[:1], 1))  # warm-up
    rate = statistics.median(summarize(*serving(lambda: run_herd(engine, requests, 1)))["tok_s"] for _ in range(runs))
    ops = {} if thread else {  # torch.profiler records the calling thread's ops alone
        op: t / (n * len(requests)) for op, t in op_times(lambda: run_herd(engine, requests, 1), runs).items()}
    spans = StepSpans(engine)
    for _ in range(runs):
        serving(lambda: run_herd(engine, requests, 1))
    spans.close()
    bound = ", ".join(f"{k} {v / 1e9:.1f} GB/s" for k, v in bws.items())
    return Measured(name, rate, ops, f"{nbytes / 1e6:.0f} MB/token; {bound}", bws["copy"] / nbytes, spans.line())


def report(paths: list[Measured], top: int) -> None:
    print(f"\n{'path':20} {'tok/s':>8} {'bound tok/s':>11} {'of bound':>8}  bound from")
    for p in paths:
        print(f"{p.name:20} {p.tok_s:8.1f} {p.bound_tok_s:11.1f} {p.tok_s / p.bound_tok_s:8.0%}  {p.bound}")
    for p in paths:
        total = sum(p.ops.values())
        if not total:
            print(f"\n{p.name}: {p.breakdown} (wall {1e3 / p.tok_s:.2f} ms/token)")
            continue
        print(f"\n{p.name}: top ops by self CPU time, ms per token (profiled {total:.2f} ms/token; "
              f"wall {1e3 / p.tok_s:.2f} ms/token)")
        for op, ms in sorted(p.ops.items(), key=lambda kv: -kv[1])[:top]:
            print(f"  {op:48} {ms:8.3f} {ms / total:6.1%}")
        if p.breakdown:
            print(f"  {p.breakdown}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", default=DEFAULT_PATHS, help=f"of {', '.join([*DECODE, *PREFILL, *SERVE])}")
    parser.add_argument("--ab", action="store_true", help="prefill paths: also their plain path, alternating")
    parser.add_argument("--preset", default="llama3-125m")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    names = args.paths.split(",")
    unknown = set(names) - {*DECODE, *PREFILL, *SERVE}
    if unknown:
        raise SystemExit(f"unknown paths {sorted(unknown)}; choose from {', '.join([*DECODE, *PREFILL, *SERVE])}")
    torch.set_num_threads(args.threads)
    tok = Tokenizer(default_tokenizer_path())
    model = build_model(preset(args.preset)).eval()
    model.init_weights(0)
    prompt = [tok.bos_id] + workload(1, 0, vocab=128000, prompts=(args.prompt_tokens - 1,) * 2)[0].prompt
    print(cpu_line())
    print(f"torch {torch.__version__}, {args.threads} threads; {args.preset}, batch 1, prompt {len(prompt)} tokens, "
          f"{args.new_tokens} new tokens, medians of {args.runs} runs")
    nbytes = streamed_bytes(model)
    _, read_bw = bandwidths(nbytes, model.config.dim, torch.float32, args.runs)
    bws = {"copy": copy_bandwidth(nbytes, args.runs), "read": read_bw}
    variants: dict[str, Callable[[], Transformer]] = {
        "f32": lambda: model, "bf16": lambda: copy.deepcopy(model).to(torch.bfloat16),
        "int8": lambda: quantize(copy.deepcopy(model), "int8")}
    paths = []
    for name in names:
        print(f"measuring {name}", flush=True)
        if name in DECODE:
            kind, compile = DECODE[name]
            paths.append(decode_path(name, variants[kind](), compile, prompt, args.new_tokens, args.runs, bws))
        elif name in PREFILL:
            paths += prefill_path(name, variants[PREFILL[name]](), prompt, args.runs, args.ab)
        else:
            kind, compile, thread = SERVE[name]
            paths.append(serve_path(name, model, tok, compile, args.new_tokens, args.runs, bws, thread, kind == "int8"))
    report(paths, args.top)


if __name__ == "__main__":
    main()
