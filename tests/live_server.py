"""Live servers for the tests that talk to one: an app served by uvicorn on a free loopback port in a thread, and
waiting for a server started in another process (herd serve, llama-server) to answer /health."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def live_server(app: Any, **options: Any) -> Iterator[str]:
    """`app` served on a free loopback port (`options` go to uvicorn.Config); yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def wait_healthy(url: str, process: subprocess.Popen | None = None, timeout: float = 120.0) -> None:
    """Return once `url`/health answers 200; fail with the tail of `process`'s stderr if it exits first."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            stderr = process.stderr.read() if process.stderr else ""
            stderr = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
            pytest.fail(f"the server at {url} exited with {process.returncode}:\n{stderr[-6000:]}")
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"the server at {url} did not answer /health in {timeout:.0f} s")
        time.sleep(0.2)
