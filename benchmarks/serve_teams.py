"""`herd serve` variants side by side on one random llama3-125m: time per output token and the engine thread's
voluntary context switches (an OpenMP thread sleeping at a barrier shows as one: herd.serve.async_engine).

    python benchmarks/serve_teams.py --arm 'plain::' --arm 'guard:--guard DIR:' [--load 4] [--requests 6] \
        [--runs 3]

Each --arm is NAME:ARGS:ENV, ARGS extra `herd serve` arguments and ENV extra environment (KEY=VALUE), both
space-separated (PYTHONPATH=DIR serves another herd source tree, e.g. `git archive HEAD~1 herd | tar -x -C DIR`).
Every arm's server starts at once (one random llama3-125m with Meta's tokenizer, saved to a temporary directory)
and stays up; then `--runs` times, each arm in turn gets the same `--requests` chat completions, `--concurrency`
at a time (default 1; not streamed, temperature 0, `--tokens` output tokens at most). Per arm, medians over runs
of: the engine's TPOT (its /metrics histogram herd_time_per_output_token_seconds, which a guard's checks before and
after a reply do not enter), the client's latency per request (guard checks included), the voluntary context switches of
the thread that steps the engine (the server's main thread) per generated token, and the server process's CPU
time per token. `--load N` runs N busy-loop processes throughout the runs (the 1-minute load average is printed
before and after); `herd serve`'s own start-up lines (its decode path, its OpenMP line) are printed too.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cpu_info import cpu_line
from llama_cpp_side_by_side import wait_up

import herd
from herd.model import build_model, preset
from herd.tokenizer import Tokenizer, default_tokenizer_path

PROMPTS = ["Write a short poem about bread and tea.", "How do I keep basil alive on a windowsill?",
           "Suggest three names for a small bakery.", "Tell me about the history of bicycles.",
           "What music goes well with a rainy afternoon?", "Give me a tip for planting tulip bulbs.",
           "Recommend a book about the ocean.", "Describe a quiet garden in the morning."]
"""Benign requests that the speedrun's tiny guard (/tmp/q3_tiny) passes (it refuses some benign ones)."""


def thread_switches(pid: int) -> int:
    """Voluntary context switches of `pid`'s main thread (the one that steps herd serve's engine)."""
    lines = Path(f"/proc/{pid}/task/{pid}/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in lines if line.startswith("voluntary_ctxt_switches"))


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process `pid`, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metric(url: str, name: str) -> float:
    lines = httpx.get(url + "/metrics", timeout=30).text.splitlines()
    return sum(float(line.split()[-1]) for line in lines if line.startswith(name + " ") or line.startswith(name + "{"))


def spin() -> None:
    while True:
        pass


def one_run(url: str, pid: int, model: str, requests: int, tokens: int, concurrency: int = 1) -> dict[str, float]:
    before = {k: metric(url, k) for k in ("herd_time_per_output_token_seconds_sum",
                                          "herd_time_per_output_token_seconds_count", "herd_generation_tokens_total")}
    switches, cpu = thread_switches(pid), cpu_seconds(pid)

    def send(i: int) -> float:
        body = {"model": model, "max_tokens": tokens, "temperature": 0,
                "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]}
        start = time.perf_counter()
        httpx.post(url + "/v1/chat/completions", json=body, timeout=600).raise_for_status()
        return time.perf_counter() - start

    with ThreadPoolExecutor(concurrency) as pool:  # `concurrency` requests in flight, the next sent as one ends
        latencies = list(pool.map(send, range(requests)))
    after = {k: metric(url, k) for k in before}
    generated = after["herd_generation_tokens_total"] - before["herd_generation_tokens_total"]
    steps = after["herd_time_per_output_token_seconds_count"] - before["herd_time_per_output_token_seconds_count"]
    tpot = (after["herd_time_per_output_token_seconds_sum"] - before["herd_time_per_output_token_seconds_sum"]) / steps
    return {"tpot": tpot * 1e3, "latency": statistics.median(latencies) * 1e3,
            "switches": (thread_switches(pid) - switches) / generated,
            "cpu": (cpu_seconds(pid) - cpu) / generated * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arm", action="append", required=True, help="NAME:ARGS:ENV (see the docstring)")
    parser.add_argument("--requests", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight")
    parser.add_argument("--load", type=int, default=0, help="busy-loop processes running throughout the runs")
    args = parser.parse_args()
    print(cpu_line())
    work = Path(tempfile.mkdtemp(prefix="herd-serve-teams-"))
    torch.manual_seed(0)
    directory = herd.save(build_model(preset("llama3-125m")), Tokenizer(default_tokenizer_path()), work / "model")
    herd_bin = str(Path(sys.executable).parent / "herd")
    arms = {}
    for i, spec in enumerate(args.arm):
        name, extra, env = spec.split(":", 2)
        port = 8790 + i
        cmd = [herd_bin, "serve", "--model", str(directory), "--port", str(port), "--max-running",
               str(args.concurrency), *extra.split()]
        environ = {**os.environ, **dict(pair.split("=", 1) for pair in env.split())}
        log = (work / f"{name}.log").open("w")
        server = subprocess.Popen(cmd, env=environ, stdout=log, stderr=subprocess.STDOUT, cwd=work)  # ENV's PYTHONPATH
        arms[name] = (server, f"http://127.0.0.1:{port}")  # (a source tree) then wins over the working tree's herd
    busy: list[multiprocessing.Process] = []
    try:
        for name, (proc, url) in arms.items():
            wait_up(proc, url, name, timeout=900, log=work / f"{name}.log")
            said = [line for line in (work / f"{name}.log").read_text().splitlines() if line.startswith("herd serve")]
            print(f"{name}: {' | '.join(said)}")
        for proc, url in arms.values():  # warm-up
            one_run(url, proc.pid, "model", 1, 8)
        busy = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.load)]
        for process in busy:
            process.start()
        if busy:
            time.sleep(20)
        print(f"load average at the start: {os.getloadavg()[0]:.1f} (1 min), {args.load} busy loops of ours, "
              f"{os.cpu_count()} CPUs")
        figures: dict[str, list[dict]] = {name: [] for name in arms}
        for _ in range(args.runs):
            for name, (proc, url) in arms.items():
                figures[name].append(one_run(url, proc.pid, "model", args.requests, args.tokens,
                                              args.concurrency))
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    finally:
        for process in busy:
            process.kill()
        for proc, _ in arms.values():
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(work)
    print(f"\n{'arm':16} {'TPOT ms':>9} {'latency ms':>11} {'switches/tok':>13} {'CPU ms/tok':>11}   (medians of "
          f"{args.runs} runs x {args.requests} requests, c={args.concurrency}, <= {args.tokens} tokens)")
    for name, runs in figures.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"{name:16} {med['tpot']:9.2f} {med['latency']:11.0f} {med['switches']:13.1f} {med['cpu']:11.2f}")


if __name__ == "__main__":
    main()
