"""`herd serve --tp 2` under torchrun (2 gloo CPU ranks) answers the `openai` client with tp=1's greedy text:
plain and streamed, concurrent requests, and a client that disconnects frees the cache of every rank; a rank 0
that cannot serve stops every rank with one line; only rank 0 loads the guard."""

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

import herd
from herd.serve.config import EngineConfig
from herd.errors import HerdError
from herd.serve.server import create_app, listen
from tests.live_server import free_port, live_server, wait_healthy

openai = pytest.importorskip("openai")
ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["The sky is", "Once upon a time", "1, 2, 3,", "Hello", "Paris is the capital of", "def f(x):"]


def _torchrun(*args: str) -> list[str]:
    """torchrun with 2 processes on this machine running ARGS (a script or `-m module`, then its options)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]


def _torchrun_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _start(command: list[str]) -> subprocess.Popen:
    """The job in its own process group (killed whole in the tests' finally), stderr kept for the assertions."""
    return subprocess.Popen(command, env=_torchrun_env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _idle(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while (health := httpx.get(url + "/health").json())["running"] or health["kv_cache_usage"]:
        assert time.monotonic() < deadline, f"engine still busy: {health}"
        time.sleep(0.05)


def _texts(client, stream: bool = False) -> list[str]:
    """Each prompt's greedy completion, 8 requests at once."""
    def one(prompt: str) -> str:
        if not stream:
            return client.completions.create(model="tiny", prompt=prompt, max_tokens=12, temperature=0).choices[0].text
        chunks = client.completions.create(model="tiny", prompt=prompt, max_tokens=12, temperature=0, stream=True)
        return "".join(chunk.choices[0].text for chunk in chunks)

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, PROMPTS + PROMPTS[:2]))


@pytest.fixture(scope="module")
def tp1_texts():
    model, tok = herd.load("tiny")
    with live_server(create_app(model, tok, model_name="tiny", engine_config=EngineConfig(max_running=4))) as url:
        texts = _texts(openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60))
    assert all(texts)
    return texts


@pytest.mark.slow
def test_serve_tp2_under_torchrun_matches_tp1(tp1_texts):
    port = free_port()
    process = _start(_torchrun("-m", "herd.cli", "serve", "--model", "tiny", "--tp", "2", "--port", str(port),
                               "--max-running", "4"))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)
        assert _texts(client) == tp1_texts
        assert _texts(client, stream=True) == tp1_texts
        with httpx.Client(timeout=30) as http:  # a streaming client that goes away mid-reply
            response = http.send(http.build_request("POST", url + "/v1/completions", json={
                "model": "tiny", "prompt": "Go on and on", "max_tokens": 1000, "temperature": 0,
                "stream": True}), stream=True)
            lines = response.iter_lines()  # kept: a dropped iterator closes the response
            next(lines)
            assert httpx.get(url + "/health").json()["kv_cache_usage"] > 0
            response.close()
        _idle(url)  # rank 0 freed its blocks, which address every rank's cache
        assert 'herd_requests_finished_total{finish_reason="abort"} 1.0' in httpx.get(url + "/metrics").text
        assert _texts(client)[:2] == tp1_texts[:2]  # and every rank still runs the same steps
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


@pytest.mark.slow
def test_serve_tp2_rank0_failing_to_listen_stops_every_rank():
    """Rank 0 cannot bind its port: it tells the other rank to stop (before any weight loads) and the job ends with
    one line naming rank 0 and the cause, instead of the follower waiting in its collective (subprocess timeout)."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        command = _torchrun("-m", "herd.cli", "serve", "--model", "tiny", "--tp", "2", "--port", str(port))
        result = subprocess.run(command, env=_torchrun_env(), cwd=ROOT, capture_output=True, text=True, timeout=300,
                                check=False)
    errors = [line for line in result.stderr.splitlines() if line.startswith("herd: error:")]
    assert result.returncode != 0 and len(errors) == 1, result.stderr[-4000:]
    assert errors[0].startswith(f"herd: error: rank 0 stopped serving: cannot listen on 127.0.0.1:{port} (Address "
                                "already in use); pick another --port or --host"), errors
    assert "memory plan" not in result.stderr  # stopped before planning or loading


def test_guard_loads_on_rank_0_alone():
    """`herd serve --guard DIR --tp N`: the guard runs beside rank 0's scheduler, so only rank 0 loads it."""
    from herd.cli.serve import load_guardrails

    args = argparse.Namespace(guard="tiny", code_shield=True, device="cpu")
    assert load_guardrails(args, 0).guard is not None
    assert load_guardrails(args, 1) is None
    assert load_guardrails(argparse.Namespace(guard=None, code_shield=False), 0) is None


def test_listen_names_a_taken_port():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(HerdError, match=rf"^cannot listen on 127.0.0.1:{port} \(Address already in use\); pick "):
            listen("127.0.0.1", port)
    listen("127.0.0.1", port).close()


def test_a_failed_step_under_tp_ends_the_engine_thread():
    """Under TP a step that raises may leave the other ranks mid-collective, so it ends the engine thread (which
    stops rank 0's server through `on_stop`) instead of failing its requests and stepping on. Here the step's
    broadcast of its plan raises: rank 0's TensorParallel has no process group behind it."""
    from herd.model.tensor_parallel import TensorParallel
    from herd.serve.async_engine import AsyncEngine, EngineStopped
    from herd.serve.engine import Engine
    from herd.serve.request import RequestParams

    model, tok = herd.load("tiny")
    runner = AsyncEngine(Engine(model, tok, EngineConfig(max_running=2)), max_pending=4)
    model.tp = TensorParallel(0, 2)
    ended = []
    runner.on_stop = ended.append
    runner.start()

    async def ask():
        with pytest.raises(EngineStopped, match="the engine stopped after an error"):
            async for _ in runner.submit([([1, 5, 9], RequestParams(max_tokens=4))]):
                pass

    asyncio.run(ask())
    runner.stop()
    assert len(ended) == 1 and isinstance(ended[0], ValueError), ended  # no default process group
    assert runner.stopped.startswith("the engine stopped after an error (ValueError")


@pytest.mark.slow
def test_serve_tp2_rank0_engine_failure_stops_every_rank():
    """Rank 0's engine step fails at the first request: the server stops, the follower leaves, and the job ends
    with one line naming rank 0 and the failure (subprocess timeout as the failure)."""
    port = free_port()
    process = _start(_torchrun(str(ROOT / "tests" / "serve" / "tp_serve_fault_worker.py"), "serve", "--model", "tiny",
                               "--tp", "2", "--port", str(port)))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        with pytest.raises((httpx.HTTPError, AssertionError)):  # the request fails (503), or the server is gone
            reply = httpx.post(url + "/v1/completions", json={"model": "tiny", "prompt": "hi", "max_tokens": 4},
                               timeout=60)
            assert reply.status_code == 200
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    errors = [line for line in stderr.splitlines() if line.startswith("herd: error:")]
    assert process.returncode != 0 and errors == [
        "herd: error: rank 0 stopped serving: the engine failed (RuntimeError: injected step failure); the other "
        "ranks stopped too"], stderr[-4000:]
