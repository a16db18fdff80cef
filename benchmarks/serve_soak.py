"""Soak of the live server: 300 requests at 32 concurrent with random client disconnects, through `herd serve`.

    python benchmarks/serve_soak.py [--model tiny] [--requests 300] [--concurrency 32] [--disconnect 0.2]

Starts `herd serve` in a process of its own, warms it up with one round of the same load, reads its RSS, runs
the soak (chat and completions, streamed or not, a `--disconnect` fraction of clients hanging up midway), waits
for the engine to go idle and reads the RSS again. Prints the counts and checks: zero server errors, every
request not cancelled completed, the engine idle with no cache block held, RSS back within 10% of its level
after warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from soak_client import SoakReport, soak, wait_idle


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: str, port: int, max_running: int, log: IO[str]) -> subprocess.Popen:
    """`herd serve` in a process of its own, its output going to `log`; returns once it answers."""
    command = [sys.executable, "-m", "herd.cli", "serve", "--model", model, "--port", str(port),
               "--max-running", str(max_running)]
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            log.seek(0)
            raise SystemExit(f"the server did not start: {log.read()[-2000:]}")
        time.sleep(0.2)


def line(name: str, report: SoakReport) -> str:
    return (f"{name:8} sent {report.sent:4d}  completed {report.completed:4d}  cancelled {report.cancelled:3d}  "
            f"incomplete {report.incomplete}  server errors {report.server_errors}  rejected {report.rejected}  "
            f"{report.tokens} tokens in {report.seconds:.1f} s ({report.tokens / report.seconds:.1f} tok/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--disconnect", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile("w+") as log:
        server = start_server(args.model, port, args.concurrency, log)
        try:
            process = psutil.Process(server.pid)
            load = {"requests": args.concurrency * 2, "concurrency": args.concurrency, "disconnect": args.disconnect}
            warm = asyncio.run(soak(url, args.model, seed=args.seed + 1, **load))
            wait_idle(url)
            rss_warm = process.memory_info().rss
            load["requests"] = args.requests
            report = asyncio.run(soak(url, args.model, seed=args.seed, **load))
            idle_start = time.perf_counter()
            health = wait_idle(url, timeout=60)
            idle_after = time.perf_counter() - idle_start
            rss_end = process.memory_info().rss
            metrics = httpx.get(url + "/metrics").text
        finally:
            server.terminate()
            server.wait(timeout=30)
        log.seek(0)
        logged = [ln for ln in log.read().splitlines() if "Traceback" in ln or "ERROR" in ln or "Error:" in ln]
    aborted = next((ln.split()[-1] for ln in metrics.splitlines()
                    if ln.startswith('herd_requests_finished_total{finish_reason="abort"}')), "0")
    print(f"herd serve --model {args.model}: {args.requests} requests at {args.concurrency} concurrent, "
          f"{args.disconnect:.0%} of clients hanging up midway")
    print(line("warm-up", warm))
    print(line("soak", report))
    print(f"idle {idle_after:.2f} s after the last response: {health}; aborts counted by the server: {aborted}")
    change = rss_end / rss_warm - 1
    print(f"RSS after warm-up {rss_warm / 2**20:.1f} MiB, after the soak {rss_end / 2**20:.1f} MiB ({change:+.1%})")
    checks = {
        "zero server errors (answers and server log)": report.server_errors == report.rejected == len(logged) == 0,
        "every request not cancelled completed": report.completed + report.cancelled == report.sent
        and report.incomplete == 0,
        "engine idle, no cache block held": health["kv_cache_usage"] == 0,
        "RSS within 10% of its level after warm-up": abs(change) <= 0.10,
    }
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    for error in report.errors + logged[:10]:
        print("  ", error)
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
