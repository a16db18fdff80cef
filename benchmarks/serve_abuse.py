"""Hostile requests against a live `herd serve` (issue 23): what each gets, and whether the server still serves.

    python benchmarks/serve_abuse.py [--model tiny] [--herd DIR] [--only NAME ...]

For each attack a fresh `herd serve --model M --api-key KEY` (tiny: random weights) is started; the attack is
sent while a thread polls /health every 0.1 s; then /health and a normal request are tried, and SIGTERM is
sent while that request is still open if it has not answered. `--herd DIR` attacks another checkout's server
(e.g. `git archive` of an older commit) to compare. Prints one row per attack: its answer and time, the slowest
/health during it, whether /health and a normal request worked right after, and how long SIGTERM took.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serve_soak import free_port
from soak_client import WORDS

KEY = "abuse-benchmark-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
TIMEOUT = 60.0
"""Longest wait for one answer; longer counts as hung."""


class Server:
    """`herd serve` in a process of its own, from the checkout `root`."""

    def __init__(self, model: str, root: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.model = model
        self.log = tempfile.TemporaryFile("w+")
        env = {**os.environ, "PYTHONPATH": str(root)}
        command = [sys.executable, "-m", "herd.cli", "serve", "--model", model, "--port", str(self.port),
                   "--api-key", KEY]
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, text=True, cwd=root,
                                        env=env)
        deadline = time.monotonic() + 300
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                self.log.seek(0)
                raise SystemExit(f"the server did not start: {self.log.read()[-2000:]}")
            time.sleep(0.2)

    def _answers(self) -> bool:
        try:
            return httpx.get(self.url + "/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def terminate(self) -> float:
        """SIGTERM; seconds until the process exited (inf: still running after 30 s, then killed)."""
        start = time.perf_counter()
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return float("inf")
        finally:
            self.log.close()
        return time.perf_counter() - start


def post(server: Server, body: dict, timeout: float = TIMEOUT) -> str:
    """A JSON completion request; its status code, or how it failed."""
    try:
        return str(httpx.post(server.url + "/v1/completions", json={"model": server.model, **body}, headers=AUTH,
                              timeout=timeout).status_code)
    except httpx.TimeoutException:
        return f"no answer in {timeout:.0f} s"
    except httpx.HTTPError as error:
        return type(error).__name__


def large_body(model: str, size: float) -> bytes:
    """A completion request of about `size` bytes, nearly all prompt: 1 MiB of varied words, repeated."""
    rng = random.Random(0)
    chunk = " ".join(f"{rng.choice(WORDS)}{rng.randrange(10_000)}" for _ in range(100_000))[: 2**20 - 1] + " "
    prompt = (chunk * (int(size) // len(chunk) + 1))[: int(size)]
    return json.dumps({"model": model, "prompt": prompt, "max_tokens": 1}).encode()


def post_large(server: Server, body: bytes) -> str:
    """`body` sent as a careful client does: headers, then the body 64 KiB at a time, stopping if the server
    answers first (a 413 needs no body)."""
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    deadline = time.monotonic() + TIMEOUT
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head)
        sent = 0
        while sent < len(body):
            readable, writable, _ = select.select([sock], [sock], [], max(deadline - time.monotonic(), 0))
            if readable or not writable:
                break
            try:
                sent += sock.send(body[sent : sent + 65536])
            except OSError:
                break
        answer = b""
        while b"\r\n" not in answer and time.monotonic() < deadline:
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                chunk = sock.recv(4096)
            except (TimeoutError, OSError):
                break
            if not chunk:
                break
            answer += chunk
    if not answer:
        return "closed, no answer" if time.monotonic() < deadline else f"no answer in {TIMEOUT:.0f} s"
    return answer.split(b" ", 2)[1].decode()


def slow_headers(server: Server) -> str:
    """A request whose headers come a byte a second; how long the server held the connection."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        sock.settimeout(1.0)
        while time.monotonic() - start < TIMEOUT:
            try:
                sock.sendall(b"X")
                if sock.recv(1024) == b"":
                    break
            except TimeoutError:
                continue
            except OSError:
                break
        else:
            return f"held {TIMEOUT:.0f} s"
    return f"closed after {time.monotonic() - start:.1f} s"


def attacks(model: str) -> dict[str, Callable[[Server], str]]:
    body_4, body_20, body_50 = (large_body(model, mb * 2**20) for mb in (3.9, 20, 50))  # built before the clock
    return {
        "seed 2^64": lambda s: post(s, {"prompt": "hi", "max_tokens": 4, "temperature": 1, "seed": 2**64}),
        "3.9 MB body (under the limit)": lambda s: post_large(s, body_4),
        "20 MB body": lambda s: post_large(s, body_20),
        "50 MB body": lambda s: post_large(s, body_50),
        "100k stop strings": lambda s: post(s, {"prompt": "hi", "max_tokens": 64, "temperature": 0,
                                               "stop": [f"never-{i}-stop" for i in range(100_000)]}),
        "prompt []": lambda s: post(s, {"prompt": [], "max_tokens": 4}),
        "1,000 prompts": lambda s: post(s, {"prompt": ["hi"] * 1000, "max_tokens": 4}),
        "slow headers": slow_headers,
        "wrong key": lambda s: str(httpx.get(s.url + "/v1/models", headers={"Authorization": "Bearer wrong"},
                                             timeout=TIMEOUT).status_code),
    }


def health_poller(server: Server, done: threading.Event, slowest: list[float]) -> None:
    """Poll /health every 0.1 s until `done`; the slowest answer goes in `slowest`."""
    while not done.is_set():
        start = time.perf_counter()
        try:
            httpx.get(server.url + "/health", timeout=TIMEOUT)
        except httpx.HTTPError:
            pass
        slowest[0] = max(slowest[0], time.perf_counter() - start)
        done.wait(0.1)


def run(name: str, attack: Callable[[Server], str], model: str, root: Path) -> dict:
    server = Server(model, root)
    done, slowest = threading.Event(), [0.0]
    poller = threading.Thread(target=health_poller, args=(server, done, slowest))
    poller.start()
    start = time.perf_counter()
    answer = attack(server)
    seconds = time.perf_counter() - start
    done.set()
    poller.join()
    try:
        health = httpx.get(server.url + "/health", timeout=10)
        health_ok = health.status_code == 200 and health.json().get("status") == "ok"
    except httpx.HTTPError:
        health_ok = False
    normal: list[str] = []
    body = {"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0}
    client = threading.Thread(target=lambda: normal.append(post(server, body, timeout=2 * TIMEOUT)), daemon=True)
    client.start()
    client.join(15)  # SIGTERM goes while a request that hangs is still open
    exit_seconds = server.terminate()
    return {"attack": name, "answer": answer, "seconds": seconds, "slowest_health": slowest[0],
            "health_after": "ok" if health_ok else "FAILED", "normal_after": "ok" if normal == ["200"] else
            f"FAILED ({normal[0] if normal else 'no answer in 15 s'})", "sigterm": exit_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--herd", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the checkout whose server is attacked")
    parser.add_argument("--only", nargs="*", default=None, help="attack names to run (default: all)")
    args = parser.parse_args()
    rows = [run(name, attack, args.model, args.herd.resolve()) for name, attack in attacks(args.model).items()
            if args.only is None or name in args.only]
    print(f"herd serve --model {args.model} from {args.herd}")
    print("| attack | answer | time s | slowest /health during, s | /health after | normal request after "
          "| SIGTERM to exit, s |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        sigterm = "still running at 30, killed" if row["sigterm"] == float("inf") else f"{row['sigterm']:.1f}"
        print(f"| {row['attack']} | {row['answer']} | {row['seconds']:.2f} | {row['slowest_health']:.2f} | "
              f"{row['health_after']} | {row['normal_after']} | {sigterm} |")
    held = all(row["health_after"] == "ok" and row["normal_after"] == "ok" for row in rows)
    print("PASS  the server kept serving after every attack" if held else "FAIL  some attack broke the server")
    sys.exit(0 if held else 1)


if __name__ == "__main__":
    main()
