"""`herd serve`'s threads: the engine steps on the thread that loaded the model, the HTTP server runs on another
(herd.serve.async_engine says why: a second OpenMP team makes libgomp sleep at every barrier of a step)."""

from __future__ import annotations

import os
import signal
import threading

import httpx
import pytest

import herd

pytest.importorskip("uvicorn")

from herd.generation import generate_tokens
from herd.serve import EngineConfig
from herd.serve.http_limits import HEADER_TIMEOUT_S
from herd.serve.server import _serve_http, create_app, listen
from tests.live_server import wait_healthy


@pytest.fixture(scope="module")
def tiny():
    return herd.load("tiny")


def _app(tiny):
    model, tok = tiny
    app = create_app(model, tok, model_name="tiny", engine_config=EngineConfig(max_running=2))
    engine, threads = app.state.runner.engine, []
    step = engine.step

    def traced():  # noqa: ANN202 - Engine.step's
        threads.append(threading.current_thread())
        return step()

    engine.step = traced
    return app, threads


def test_serve_steps_the_engine_on_its_own_thread_and_stops_on_sigint(tiny):
    model, tok = tiny
    app, threads = _app(tiny)
    listener = listen("127.0.0.1", 0)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    texts, errors = [], []

    def client() -> None:
        try:
            wait_healthy(url, timeout=30)
            body = {"model": "tiny", "prompt": "Hello", "max_tokens": 8, "temperature": 0}
            texts.append(httpx.post(url + "/v1/completions", json=body, timeout=60).json()["choices"][0]["text"])
        except BaseException as error:
            errors.append(error)
        finally:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: a graceful shutdown, then KeyboardInterrupt as uvicorn does

    # Python's own Ctrl-C handler, whatever this process inherited: a background job of a non-interactive shell (how
    # CI may start pytest) starts with SIGINT ignored, and the re-raised signal then does nothing.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=client, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            _serve_http(app, listener, "127.0.0.1", 0, HEADER_TIMEOUT_S, None)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored before it was raised again
    finally:
        signal.signal(signal.SIGINT, inherited)
    assert not errors, errors
    expected = generate_tokens(model, [tok.encode("Hello", bos=True)], max_new_tokens=8, stop_ids=tok.stop_ids)[0]
    assert texts == [tok.decode(expected.tokens)]
    assert threads and set(threads) == {threading.current_thread()}  # the engine stepped on this thread alone
    assert app.state.runner.stopped is not None  # the engine's loop ended with the server


def test_serve_returns_why_when_the_http_server_cannot_start(tiny):
    app, threads = _app(tiny)
    listener = listen("127.0.0.1", 0)
    listener.close()  # uvicorn fails at start-up: the engine's loop must end too, not wait for requests
    cause = _serve_http(app, listener, "127.0.0.1", 0, HEADER_TIMEOUT_S, None)
    assert cause is not None and cause.startswith("the server failed")
    assert app.state.runner.stopped is not None and not threads
