"""A load test of a live server: many concurrent OpenAI-API requests (chat and completions, streamed or not),
some of whose clients hang up midway; it counts what completed, what was cancelled and what went wrong.

A workload, not a benchmark to run: `benchmarks/serve_soak.py`, `serve_abuse.py` and tests/serve/test_serve_soak.py import
it (tests find benchmarks/ through pytest's `pythonpath`); herd itself never does, so it is not shipped.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field

import httpx

WORDS = ("the", "sea", "river", "stone", "light", "house", "music", "garden", "winter", "letter", "market", "story",
         "friend", "engine", "cloud", "number", "paper", "morning", "bridge", "animal", "forest", "window", "summer")


@dataclass
class SoakReport:
    """What happened to the requests of one load test."""

    sent: int = 0
    completed: int = 0
    """Requests that ran to their end (a finish reason, and `[DONE]` when streamed)."""
    cancelled: int = 0
    """Requests whose client hung up before the end, on purpose."""
    incomplete: int = 0
    """Requests the client did not cancel that still ended without a finish reason."""
    server_errors: int = 0
    """5xx answers and error events in streams."""
    rejected: int = 0
    """4xx answers (429 when the server is full)."""
    tokens: int = 0
    """Completion tokens of the completed requests."""
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    """The first few error messages, for the record."""

    def note(self, message: str) -> None:
        if len(self.errors) < 10:
            self.errors.append(message)


async def soak(
    url: str,
    model: str,
    *,
    requests: int,
    concurrency: int,
    disconnect: float = 0.2,
    max_tokens: tuple[int, int] = (8, 96),
    seed: int = 0,
    api_key: str | None = None,
) -> SoakReport:
    """Send `requests` requests to the server at `url`, `concurrency` at a time; a `disconnect` fraction of
    their clients hang up midway (streams after a few events, others after a short timeout)."""
    rng = random.Random(seed)
    report = SoakReport()
    gate = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=300, limits=limits) as client:

        async def one(plan: dict) -> None:
            async with gate:
                report.sent += 1
                await _request(client, plan, report)

        await asyncio.gather(*(one(_plan(rng, model, max_tokens, disconnect)) for _ in range(requests)))
    report.seconds = time.perf_counter() - start
    return report


def _plan(rng: random.Random, model: str, max_tokens: tuple[int, int], disconnect: float) -> dict:
    """One random request: its endpoint, body, and whether (and when) its client hangs up."""
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 40)))
    body: dict = {"model": model, "max_tokens": rng.randint(*max_tokens), "temperature": rng.choice((0.0, 0.8)),
                  "stream": rng.random() < 0.5, "seed": rng.randint(0, 1 << 30)}
    if body["stream"]:
        body["stream_options"] = {"include_usage": True}
    if rng.random() < 0.5:
        path, body["messages"] = "/v1/chat/completions", [{"role": "user", "content": text}]
    else:
        path, body["prompt"] = "/v1/completions", text
    hang_up = rng.random() < disconnect
    return {"path": path, "body": body, "hang_up": hang_up, "after_events": rng.randint(1, 4),
            "after_seconds": rng.uniform(0.05, 0.5)}


async def _request(client: httpx.AsyncClient, plan: dict, report: SoakReport) -> None:
    try:
        if plan["body"]["stream"]:
            await _stream(client, plan, report)
        else:
            timeout = plan["after_seconds"] if plan["hang_up"] else None
            response = await asyncio.wait_for(client.post(plan["path"], json=plan["body"]), timeout)
            if _check_status(response, report):
                body = response.json()
                if all(choice.get("finish_reason") for choice in body["choices"]):
                    report.completed += 1
                    report.tokens += body["usage"]["completion_tokens"]
                else:
                    report.incomplete += 1
                    report.note(f"no finish reason: {body}")
    except TimeoutError:
        report.cancelled += 1  # the client hung up on purpose
    except httpx.HTTPError as error:
        report.incomplete += 1
        report.note(f"{type(error).__name__}: {error}")


async def _stream(client: httpx.AsyncClient, plan: dict, report: SoakReport) -> None:
    async with client.stream("POST", plan["path"], json=plan["body"]) as response:
        if not _check_status(response, report, streamed=True):
            await response.aread()
            return
        events, finished, done, tokens = 0, False, False, 0
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line.removeprefix("data: ")
            if data == "[DONE]":
                done = True
                break
            chunk = json.loads(data)
            if "error" in chunk:
                report.server_errors += 1
                report.note(f"error event: {chunk['error']}")
                return
            events += 1
            tokens = chunk["usage"]["completion_tokens"] if chunk.get("usage") else tokens
            finished = finished or any(choice.get("finish_reason") for choice in chunk["choices"])
            if plan["hang_up"] and events >= plan["after_events"] and not finished:
                report.cancelled += 1  # leaving the block closes the connection mid-stream
                return
        if finished and done:
            report.completed += 1
            report.tokens += tokens
        else:
            report.incomplete += 1
            report.note(f"stream ended without finish reason or [DONE] after {events} events")


def _check_status(response: httpx.Response, report: SoakReport, streamed: bool = False) -> bool:
    if response.status_code == 200:
        return True
    if response.status_code >= 500:
        report.server_errors += 1
    else:
        report.rejected += 1
    report.note(f"HTTP {response.status_code}" + ("" if streamed else f": {response.text[:200]}"))
    return False


def wait_idle(url: str, timeout: float = 30.0) -> dict:
    """Poll `/health` until the engine holds no request and no cache block; returns it (TimeoutError if never)."""
    deadline = time.monotonic() + timeout
    while True:
        health = httpx.get(url + "/health", timeout=10).json()
        if health["running"] == 0 and health["waiting"] == 0 and health["kv_cache_usage"] == 0:
            return health
        if time.monotonic() > deadline:
            raise TimeoutError(f"the server is still busy after {timeout} s: {health}")
        time.sleep(0.05)
