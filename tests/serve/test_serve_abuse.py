"""Hostile and careless requests against a live server (issue 23): each fails alone, with a clear status and
an OpenAI error body, and the server keeps serving (tiny model)."""

from __future__ import annotations

import hmac
import socket
import threading
import time

import httpx
import pytest

import herd

uvicorn = pytest.importorskip("uvicorn")

from herd.errors import HerdError
from herd.serve import EngineConfig, RequestParams
from herd.serve.http_limits import uvicorn_options
from herd.serve.protocol import MAX_STOP_CHARS, MAX_STOPS
from herd.serve.server import create_app, resolve_api_key
from tests.live_server import live_server

KEY = "abuse-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
BODY_LIMIT = 64 * 1024
HEADER_TIMEOUT = 1.0


def _app(model, tok):
    """2 running + 2 queued requests at most, a 64 KiB body limit, an API key."""
    return create_app(model, tok, model_name="tiny", api_key=KEY, max_queue=2, max_body_bytes=BODY_LIMIT,
                      engine_config=EngineConfig(max_running=2, block_size=8))


@pytest.fixture(scope="module")
def tiny():
    return herd.load("tiny")


@pytest.fixture(scope="module")
def server(tiny):
    app = _app(*tiny)
    with live_server(app, **uvicorn_options(header_timeout=HEADER_TIMEOUT)) as url:
        yield {"url": url, "app": app, "tok": tiny[1]}


def _post(url: str, body: dict, path: str = "/v1/completions", timeout: float = 20) -> httpx.Response:
    return httpx.post(url + path, json={"model": "tiny", **body}, headers=AUTH, timeout=timeout)


def _still_serving(url: str) -> None:
    """/health is ok and a normal request completes."""
    assert httpx.get(url + "/health", timeout=10).json()["status"] == "ok"
    answer = _post(url, {"prompt": "Once upon a time", "max_tokens": 3, "temperature": 0.7, "seed": 1})
    assert answer.status_code == 200 and answer.json()["choices"][0]["finish_reason"] == "length"


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    return response.json()["error"]["message"]


def test_out_of_range_seed_gets_400_and_the_engine_keeps_running(server):
    url = server["url"]
    for seed in (2**64, -1):  # 2^64 killed the engine thread: every later request hung
        assert "seed" in _error(_post(url, {"prompt": "hi", "max_tokens": 2, "seed": seed}), 400)
    _still_serving(url)
    top = _post(url, {"prompt": "hi", "max_tokens": 2, "temperature": 1, "seed": 2**64 - 1, "n": 2})
    assert top.status_code == 200  # the largest seed runs; the next choice's seed wraps around to 0
    with pytest.raises(HerdError, match="seed"):
        RequestParams(max_tokens=1, temperature=1.0, seed=2**64)


def test_every_integer_field_at_extremes_gets_an_answer(server):
    url = server["url"]
    fields = ["max_tokens", "n", "top_k", "logprobs", "seed"]
    for value in (2**64, 2**63, -(2**63) - 1):
        for field in fields:
            assert _post(url, {"prompt": "hi", "max_tokens": 2, field: value}).status_code in (200, 400), field
        assert _post(url, {"prompt": [value], "max_tokens": 2}).status_code == 400
        assert _post(url, {"prompt": "hi", "max_tokens": 2, "stop_token_ids": [value]}).status_code in (200, 400)
        for field in ("max_completion_tokens", "top_logprobs"):
            chat = _post(url, {"messages": [{"role": "user", "content": "hi"}], field: value, "max_tokens": 2},
                         "/v1/chat/completions")
            assert chat.status_code in (200, 400), field
    _still_serving(url)


def test_a_request_that_raises_fails_alone_with_a_500_error_body(server, monkeypatch):
    engine = server["app"].state.runner.engine
    add = engine.add_request

    def add_or_fail(request_id, prompt, params):
        if params.max_tokens == 7:
            raise ValueError("an unforeseen failure")
        add(request_id, prompt, params)

    monkeypatch.setattr(engine, "add_request", add_or_fail)
    failed = _post(server["url"], {"prompt": "hi", "max_tokens": 7})  # in the engine thread: it hung
    assert "an unforeseen failure" in _error(failed, 500)
    assert failed.json()["error"]["type"] == "server_error"
    tok = server["tok"]
    monkeypatch.setattr(tok, "encode", lambda text, **kwargs: 1 / 0)  # in the app: a bare-text 500
    assert "ZeroDivisionError" in _error(_post(server["url"], {"prompt": "hi", "max_tokens": 2}), 500)
    monkeypatch.undo()
    _still_serving(server["url"])


class _Fatal(BaseException):
    """What no handler catches: it ends the engine thread."""


def test_a_dead_engine_fails_held_requests_and_health_and_refuses_new_ones(tiny, monkeypatch):
    app = _app(*tiny)
    engine = app.state.runner.engine
    entered, release = threading.Event(), threading.Event()

    def step():
        entered.set()
        release.wait(20)
        raise _Fatal("the engine thread dies")

    monkeypatch.setattr(engine, "step", step)
    with live_server(app) as url:
        held: list[httpx.Response] = []
        client = threading.Thread(target=lambda: held.append(_post(url, {"prompt": "hi", "max_tokens": 4})))
        client.start()
        assert entered.wait(20)
        release.set()
        client.join(30)
        assert held and "restart the server" in _error(held[0], 503)  # it hung forever
        assert "_Fatal" in _error(httpx.get(url + "/health", timeout=10), 503)
        assert "restart the server" in _error(_post(url, {"prompt": "hi", "max_tokens": 2}, timeout=10), 503)


def test_body_over_the_limit_gets_413_declared_or_streamed(server):
    url = server["url"]
    big = {"model": "tiny", "prompt": "word " * BODY_LIMIT, "max_tokens": 1}
    declared = httpx.post(url + "/v1/completions", json=big, headers=AUTH, timeout=20)
    assert "limit of 65,536 bytes" in _error(declared, 413)
    assert declared.headers["connection"] == "close"

    def chunks():  # no Content-Length: the server counts what it reads
        yield b'{"model": "tiny", "prompt": "'
        for _ in range(BODY_LIMIT // 1000 + 1):
            yield b"word " * 200
        yield b'", "max_tokens": 1}'

    streamed = httpx.post(url + "/v1/completions", content=chunks(), headers={**AUTH, "Content-Type":
                          "application/json"}, timeout=20)
    assert "limit of 65,536 bytes" in _error(streamed, 413)
    _still_serving(url)


def test_tokenization_leaves_the_event_loop_free_and_slow_answers_are_not_cut(server, monkeypatch):
    tok, url = server["tok"], server["url"]
    encode = tok.encode
    entered, release = threading.Event(), threading.Event()

    def slow_encode(text, **kwargs):
        if text == "slow":
            entered.set()
            release.wait(20)
        return encode(text, **kwargs)

    monkeypatch.setattr(tok, "encode", slow_encode)
    held: list[httpx.Response] = []
    client = threading.Thread(target=lambda: held.append(_post(url, {"prompt": "slow", "max_tokens": 2})))
    client.start()
    try:
        assert entered.wait(20)
        assert httpx.get(url + "/health", timeout=5).status_code == 200  # blocked until the encode ended
        time.sleep(1.5 * HEADER_TIMEOUT)  # a request whose headers are in is never cut, however long it takes
    finally:
        release.set()
        client.join(30)
    assert held[0].status_code == 200


def test_stop_strings_are_capped(server):
    url = server["url"]
    many = [f"stop{i}" for i in range(MAX_STOPS + 1)]
    assert f"limit of {MAX_STOPS}" in _error(_post(url, {"prompt": "hi", "max_tokens": 2, "stop": many}), 400)
    long = "x" * (MAX_STOP_CHARS + 1)
    assert f"limit of {MAX_STOP_CHARS}" in _error(_post(url, {"prompt": "hi", "max_tokens": 2, "stop": long}), 400)
    assert _post(url, {"prompt": "hi", "max_tokens": 2, "stop": many[:MAX_STOPS]}).status_code == 200


def test_empty_and_oversized_prompt_lists_get_400(server):
    url = server["url"]
    assert "empty" in _error(_post(url, {"prompt": [], "max_tokens": 2}), 400)
    too_many = _post(url, {"prompt": ["hi"] * 1000, "max_tokens": 2})  # 429 "retry later" could never succeed
    assert "limit of 4 per request" in _error(too_many, 400)
    assert "6 choices" in _error(_post(url, {"prompt": ["a", "b", "c"], "n": 2, "max_tokens": 2}), 400)
    _still_serving(url)


def test_api_key_is_compared_in_constant_time(server, monkeypatch):
    calls = []
    original = hmac.compare_digest

    def compare(a, b):
        calls.append(1)
        return original(a, b)

    monkeypatch.setattr(hmac, "compare_digest", compare)
    url = server["url"]
    assert httpx.get(url + "/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(url + "/v1/models", headers={"Authorization": "Bearer \xe9".encode("latin-1")}).status_code == 401
    assert httpx.get(url + "/v1/models", headers=AUTH).status_code == 200
    assert len(calls) == 3


def test_api_key_from_a_file_or_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("HERD_API_KEY", raising=False)
    assert resolve_api_key() is None
    monkeypatch.setenv("HERD_API_KEY", "from-env")
    assert resolve_api_key() == "from-env"
    assert resolve_api_key("given") == "given"
    path = tmp_path / "key"
    path.write_text("from-file\n")
    assert resolve_api_key(key_file=path) == "from-file"
    with pytest.raises(HerdError, match="not both"):
        resolve_api_key("given", path)
    path.write_text("\n")
    with pytest.raises(HerdError, match="empty"):
        resolve_api_key(key_file=path)
    with pytest.raises(HerdError, match="cannot read"):
        resolve_api_key(key_file=tmp_path / "missing")


def test_slow_headers_are_cut_off(server):
    host, port = server["url"].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        deadline = time.monotonic() + 10 * HEADER_TIMEOUT
        closed = False
        while not closed and time.monotonic() < deadline:
            try:
                sock.sendall(b"X")  # a header trickling in a byte at a time: its connection was held forever
                sock.settimeout(0.1)
                closed = sock.recv(1024) == b""
            except TimeoutError:
                continue
            except OSError:
                closed = True
        assert closed
