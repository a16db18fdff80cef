"""herd against llama.cpp on CPU: the same model, the same threads, the same machine, one script, medians.

Model: the llama3-125m preset (random weights, seed 0) with Meta's tokenizer, saved by herd and exported by herd's
GGUF writer (f32, bf16, f16, q8_0) for llama.cpp, built by benchmarks/llama_cpp_build.py (cached).
1. Batch-1 prefill and decode tokens/s: herd eager and compiled (f32, bf16, int8 weight-only), timed as
   benchmarks/decode_cpu.py does (prefill = prompt / time of a 1-token generation; decode = (N - 1) / the rest),
   beside `llama-bench -t THREADS -p PROMPT -n N -r 1` on each GGUF file, interleaved: each round times every herd
   path, then each llama-bench; medians over `--runs` rounds.
2. Serving at each concurrency: `herd serve` (f32, its default CPU path: `--compile auto`, which compiles the step
   of a lone decode at start-up), `herd serve --compile off` (every step eager; `--no-compile` leaves the default
   one out) and `llama-server -np 16 -t THREADS`
   (continuous batching, f32); `herd serve --quantize int8` (its one-request step compiled too) beside llama-server
   on the q8_0 file; `--servers` picks some. All up at once and driven in turn by the same streaming HTTP client on
   serve_throughput.py's workload (random prompts of 32..160 ids, output lengths spread over 16..128, greedy,
   closed loop); output tokens/s, TTFT and TPOT as serve_throughput.summarize computes them, medians over runs.
`--profile` prints torch.profiler's top ops of herd's f32 eager decode (where its time goes).
Run from the repo root: `python benchmarks/llama_cpp_side_by_side.py [--threads 2 --runs 3 --concurrency 1,8,16]`
(`--serving-only` leaves out part 1).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cpu_info import cpu_line
from decode_cpu import seconds
from llama_cpp_build import binaries
from serve_throughput import Trace, summarize, workload

import herd
import herd.checkpoint as ckpt
from herd.generation import generate_tokens
from herd.model import build_model, preset
from herd.serve.quantize import quantize
from herd.tokenizer import Tokenizer, default_tokenizer_path

GGUF_TYPES = ("f32", "bf16", "f16", "q8_0")


def batch1_rates(args: argparse.Namespace, tools: dict[str, Path], directory: Path, files: dict[str, Path],
                 prompt: list[int]) -> dict[str, tuple[float, float]]:
    """Name -> (prefill tok/s, decode tok/s) for herd's batch-1 paths and llama-bench on each GGUF type, interleaved:
    each of `--runs` rounds times every herd path once, then runs llama-bench once (`-r 1`) on each file; medians
    over the rounds (a loaded machine slows both sides alike)."""
    fp32, _ = herd.load(directory)
    models = {"f32": fp32, "bf16": copy.deepcopy(fp32).to(torch.bfloat16),
              "int8": quantize(copy.deepcopy(fp32), "int8")}
    paths = [(f"herd {dtype} eager", models[dtype], False) for dtype in ("f32", "bf16", "int8")]
    if not args.no_compile:
        paths += [(f"herd {dtype} compiled", models[dtype], True) for dtype in ("f32", "bf16", "int8")]

    def run(model, compile: bool, n: int) -> float:  # noqa: ANN001
        return seconds(lambda: generate_tokens(model, [prompt], max_new_tokens=n, compile=compile))

    for name, model, compile in paths:  # warm-up; the compiled ones compile here (once per model and batch)
        print(f"warm-up {name}: {run(model, compile, args.new_tokens):.1f} s", flush=True)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in paths}
    peer: dict[str, list[tuple[float, float]]] = {f"llama.cpp {kind}": [] for kind in files}
    for _ in range(args.runs):
        for name, model, compile in paths:
            times[name].append((run(model, compile, 1), run(model, compile, args.new_tokens)))
        for kind, path in files.items():
            peer[f"llama.cpp {kind}"].append(llama_bench(args, tools, path))
    rates = {name: (len(prompt) / statistics.median(a for a, _ in t),
                    (args.new_tokens - 1) / statistics.median(b - a for a, b in t)) for name, t in times.items()}
    return rates | {name: tuple(statistics.median(r[i] for r in runs) for i in (0, 1)) for name, runs in peer.items()}


def llama_bench(args: argparse.Namespace, tools: dict[str, Path], path: Path) -> tuple[float, float]:
    """(prefill tok/s, decode tok/s) of one llama-bench repetition on a GGUF file (after its own warm-up)."""
    cmd = [str(tools["llama-bench"]), "-m", str(path), "-t", str(args.threads), "-p", str(args.prompt_tokens),
           "-n", str(args.new_tokens), "-r", "1", "-o", "json"]
    results = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    by_test = {"pp" if r["n_gen"] == 0 else "tg": statistics.median(r["samples_ts"]) for r in results}
    return by_test["pp"], by_test["tg"]


def profile_decode(directory: Path, prompt: list[int], n: int) -> None:
    model, _ = herd.load(directory)
    generate_tokens(model, [prompt], max_new_tokens=4)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        generate_tokens(model, [prompt], max_new_tokens=n)
    print(f"\nherd f32 eager, {n} decoded tokens under torch.profiler, top ops by self CPU time:")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=50))


async def drive(url: str, requests: list, concurrency: int, extra: dict) -> tuple[list[Trace], float]:
    """Closed loop over `requests` with `concurrency` streaming /v1/completions in flight; a Trace per request."""
    traces: list[Trace | None] = [None] * len(requests)
    queue = list(enumerate(requests))

    async def worker(client: httpx.AsyncClient, model: str) -> None:
        while queue:
            i, request = queue.pop(0)
            body = {"model": model, "prompt": request.prompt, "max_tokens": request.output_len, "temperature": 0,
                    "stream": True, **extra}
            trace = traces[i] = Trace(time.perf_counter())
            async with client.stream("POST", "/v1/completions", json=body) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        choice = (json.loads(line[6:]).get("choices") or [{}])[0]
                        if choice.get("text") or ("text" in choice and choice.get("finish_reason") is None):
                            trace.tokens.append(time.perf_counter())  # a token (its text may be held back)

    # A new connection per request: llama-server (cpp-httplib) closes a kept-alive connection after a few requests,
    # and a request sent on it as it closes fails with "Server disconnected without sending a response".
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        model = (await client.get("/v1/models")).json()["data"][0]["id"]
        start = time.perf_counter()
        await asyncio.gather(*(worker(client, model) for _ in range(concurrency)))
    return [t for t in traces if t is not None and t.tokens], time.perf_counter() - start  # a stop as first token


def wait_up(proc: subprocess.Popen, url: str, name: str, timeout: float = 600.0, log: Path | None = None) -> None:
    """Return once `url`/health answers 200 (herd serve compiles its one-request step at start-up); SystemExit,
    with the tail of `log`, if the server exits or `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    why = f"exited with {proc.returncode}" if proc.poll() is not None else f"did not come up in {timeout:.0f} s"
    raise SystemExit(f"{name} {why}" + (f": {log.read_text()[-2000:]}" if log else ""))


SERVERS = ("herd", "herd-eager", "llama", "herd-int8", "llama-q8_0")


def serving(args: argparse.Namespace, tools: dict[str, Path], directory: Path, files: dict[str, Path]) -> list[str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    slots = max(args.concurrency)
    herd = [str(Path(sys.executable).parent / "herd"), "serve", "--model", str(directory), "--max-running", str(slots)]

    def llama(kind: str, port: int) -> tuple[list[str], str, dict]:
        return ([str(tools["llama-server"]), "-m", str(files[kind]), "--port", str(port), "-t", str(args.threads),
                 "-tb", str(args.threads), "-np", str(slots), "-c", str(slots * 512), "--no-warmup"],
                f"http://127.0.0.1:{port}", {"ignore_eos": True})

    servers = {
        "herd serve": ([*herd, "--port", "8731"], "http://127.0.0.1:8731", {}),
        "herd eager": ([*herd, "--port", "8733", "--compile", "off"], "http://127.0.0.1:8733", {}),
        "llama-server": llama("f32", 8732),
        "herd int8": ([*herd, "--port", "8734", "--quantize", "int8"], "http://127.0.0.1:8734", {}),
        "llama q8_0": llama("q8_0", 8735),
    }
    servers = {name: server for key, (name, server) in zip(SERVERS, servers.items(), strict=True)
               if key in args.servers and not (args.no_compile and key in ("herd", "herd-int8"))}
    logs = {name: (directory.parent / f"{name.replace(' ', '_')}.log").open("w") for name in servers}
    procs = {name: subprocess.Popen(cmd, env=env, stdout=logs[name], stderr=subprocess.STDOUT)
             for name, (cmd, _, _) in servers.items()}
    print(f"server logs: {', '.join(log.name for log in logs.values())}")
    rows = []
    try:
        for name, (_, url, _) in servers.items():
            wait_up(procs[name], url, name)
        for name in servers:  # herd serve picks OpenMP's wait policy from the load at its start (herd.cli.openmp)
            policy = [line for line in Path(logs[name].name).read_text().splitlines() if "OpenMP" in line]
            if policy:
                print(f"{name}: {policy[0]}")
        for c in args.concurrency:
            requests = workload(max(2 * c, 8), seed=c, vocab=128000, outputs=(16, 128))
            figures: dict[str, list[dict]] = {name: [] for name in servers}
            for name, (_, url, extra) in servers.items():  # warm-up
                asyncio.run(drive(url, requests[:2], min(c, 2), extra))
            for _ in range(args.runs):
                for name, (_, url, extra) in servers.items():
                    figures[name].append(summarize(*asyncio.run(drive(url, requests, c, extra))))
            for name, runs in figures.items():
                med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                rows.append(f"{c:>4} {name:13} {med['tok_s']:10.1f} {med['ttft_p50']:10.0f} {med['ttft_p99']:10.0f} "
                            f"{med['tpot_p50']:10.1f} {med['itl_p99']:9.0f}")
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(timeout=30)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=lambda s: [int(c) for c in s.split(",")], default=[1, 8, 16])
    parser.add_argument("--no-compile", action="store_true", help="leave out herd's compiled decode")
    parser.add_argument("--no-serving", action="store_true")
    parser.add_argument("--serving-only", action="store_true", help="leave out the batch-1 rows")
    parser.add_argument("--servers", type=lambda s: s.split(","), default=list(SERVERS),
                        help=f"the servers to run, of {','.join(SERVERS)} (default: all)")
    parser.add_argument("--profile", action="store_true", help="torch.profiler's top ops of herd's f32 decode")
    args = parser.parse_args()
    tools = binaries()
    if tools is None:
        raise SystemExit("no llama.cpp build: run python benchmarks/llama_cpp_build.py first")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="llama_cpp_side_by_side-") as work:
        side_by_side(args, tools, Path(work))


def side_by_side(args: argparse.Namespace, tools: dict[str, Path], work: Path) -> None:
    """Every row of the table, on one random llama3-125m saved under `work` as a herd directory and GGUF files."""
    tok = Tokenizer(default_tokenizer_path())
    model = build_model(preset("llama3-125m"))
    model.init_weights(0)
    directory = herd.save(model, tok, work / "herd")
    files = {kind: ckpt.convert(directory, work / f"model-{kind}.gguf", to="gguf", outtype=kind) for kind in GGUF_TYPES}
    prompt = [tok.bos_id] + workload(1, 0, vocab=128000, prompts=(args.prompt_tokens - 1,) * 2)[0].prompt
    print(cpu_line())
    print(f"torch {torch.__version__}, {args.threads} threads; llama.cpp {tools['llama-bench'].parents[1].name}; "
          f"llama3-125m, prompt {len(prompt)} tokens, {args.new_tokens} new tokens, medians of {args.runs} runs")
    rates = {} if args.serving_only else batch1_rates(args, tools, directory, files, prompt)
    if rates:
        print(f"\n{'batch-1':24} {'prefill tok/s':>13} {'decode tok/s':>12}")
    for name, (prefill, decode) in rates.items():
        print(f"{name:24} {prefill:13.0f} {decode:12.1f}")
    pairs = [("herd f32 eager", "llama.cpp f32"), ("herd f32 compiled", "llama.cpp f32"),
             ("herd bf16 eager", "llama.cpp bf16"), ("herd bf16 compiled", "llama.cpp bf16"),
             ("herd int8 eager", "llama.cpp q8_0"), ("herd int8 compiled", "llama.cpp q8_0")]
    for ours, theirs in pairs:
        if ours in rates and theirs in rates:
            print(f"{ours} / {theirs}: prefill {rates[ours][0] / rates[theirs][0]:.2f}x, "
                  f"decode {rates[ours][1] / rates[theirs][1]:.2f}x")
    if not args.no_serving:
        print(f"\n{'c':>4} {'server':13} {'out tok/s':>10} {'TTFT p50':>10} {'TTFT p99':>10} {'TPOT p50':>10} "
              f"{'ITL p99':>9}  (ms)")
        print("\n".join(serving(args, tools, directory, files)))
    if args.profile:
        profile_decode(directory, prompt, args.new_tokens)


if __name__ == "__main__":
    main()
