"""The OpenAI-compatible server on loopback, driven by the official `openai` client (tiny model)."""

from __future__ import annotations

import time

import httpx
import pytest

import herd

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

from herd.serve import EngineConfig
from herd.serve.server import create_app
from tests.live_server import live_server

API_KEY = "test-key"
MODEL = "tiny"


@pytest.fixture(scope="module")
def server():
    """A live server on a free loopback port: 2 running + 1 queued requests at most, API key required."""
    model, tok = herd.load("tiny")
    app = create_app(
        model, tok, model_name=MODEL, api_key=API_KEY, max_queue=1, max_prompt_tokens=512,
        engine_config=EngineConfig(max_running=2, max_step_tokens=64, block_size=8),
    )
    with live_server(app) as url:
        yield {"url": url, "app": app, "tok": tok, "model": model}


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server["url"] + "/v1", api_key=API_KEY, max_retries=0, timeout=60)


def _idle(server, timeout: float = 10.0) -> dict:
    """Wait until the engine holds no request; returns /health."""
    deadline = time.monotonic() + timeout
    while True:
        health = httpx.get(server["url"] + "/health").json()
        if health["running"] == 0 and health["waiting"] == 0 and health["kv_cache_usage"] == 0:
            return health
        assert time.monotonic() < deadline, f"engine still busy: {health}"
        time.sleep(0.05)


def test_chat_completion_matches_generate(server, client):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}]
    response = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0)
    tok, model = server["tok"], server["model"]
    expected = herd.generation.generate_tokens(
        model, [tok.encode_dialog(messages)], max_new_tokens=12, stop_ids=tok.stop_ids
    )[0]
    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == tok.decode(expected.tokens)
    assert choice.finish_reason == expected.finish_reason
    assert response.usage.prompt_tokens == len(tok.encode_dialog(messages))
    assert response.usage.completion_tokens == len(expected.tokens)
    assert response.model == MODEL


def test_streaming_chat_joins_to_the_full_reply_and_reports_usage(client):
    messages = [{"role": "user", "content": "Count to five."}]
    full = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=10, temperature=0)
    stream = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=10, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        full.choices[0].finish_reason
    ]
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_completions_n_seed_stop_and_logprobs(client):
    kwargs = {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 8, "temperature": 1.0, "seed": 3,
              "n": 2}
    first = client.completions.create(**kwargs)
    again = client.completions.create(**kwargs)
    assert [c.text for c in first.choices] == [c.text for c in again.choices]  # seeded: reproducible
    assert [c.index for c in first.choices] == [0, 1]
    assert first.choices[0].text != first.choices[1].text  # each choice has a seed of its own
    assert first.usage.completion_tokens == 16
    greedy = client.completions.create(model=MODEL, prompt=["Once upon a time"], max_tokens=8, temperature=0,
                                       logprobs=2)
    choice = greedy.choices[0]
    assert len(choice.logprobs.tokens) == 8 == len(choice.logprobs.token_logprobs)
    assert all(len(top) <= 2 for top in choice.logprobs.top_logprobs)
    assert "".join(choice.logprobs.tokens) == choice.text
    stop = choice.text[3:6]
    stopped = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8, temperature=0,
                                        stop=[stop])
    assert stopped.choices[0].text == choice.text[: choice.text.index(stop)]
    assert stopped.choices[0].finish_reason == "stop"


def test_chat_logprobs_and_models(client):
    response = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4, temperature=0, logprobs=True,
        top_logprobs=3,
    )
    entries = response.choices[0].logprobs.content
    assert len(entries) == response.usage.completion_tokens
    assert all(len(e.top_logprobs) == 3 and e.top_logprobs[0].logprob >= e.logprob - 1e-6 for e in entries)
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_invalid_requests_get_openai_errors_and_the_server_keeps_serving(server, client):
    chat = client.chat.completions
    ok = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        chat.create(model="gpt-4", messages=ok)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        chat.create(model=MODEL, messages=ok, max_tokens=-1)
    with pytest.raises(openai.BadRequestError, match="messages"):
        chat.create(model=MODEL, messages=[])
    with pytest.raises(openai.BadRequestError, match="temperature"):
        chat.create(model=MODEL, messages=ok, temperature="hot")
    with pytest.raises(openai.BadRequestError, match="limit of 512"):
        client.completions.create(model=MODEL, prompt="word " * 600, max_tokens=1)
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    bad_json = httpx.post(server["url"] + "/v1/chat/completions", content="{not json", headers=headers)
    assert bad_json.status_code == 400
    assert bad_json.json()["error"]["type"] == "invalid_request_error"
    assert chat.create(model=MODEL, messages=ok, max_tokens=2).choices[0].finish_reason in ("length", "stop")


def test_api_key_is_required(server):
    wrong = openai.OpenAI(base_url=server["url"] + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    assert httpx.get(server["url"] + "/v1/models").status_code == 401
    assert httpx.get(server["url"] + "/health").status_code == 200


def _open_stream(server, http: httpx.Client, max_tokens: int = 600):
    """Start a streamed completion and read its first event; returns the open response and its lines (dropping
    the line iterator would close the connection)."""
    body = {"model": MODEL, "prompt": "Tell me everything.", "max_tokens": max_tokens, "temperature": 0,
            "stream": True}
    request = http.build_request("POST", server["url"] + "/v1/completions", json=body,
                                 headers={"Authorization": f"Bearer {API_KEY}"})
    response = http.send(request, stream=True)
    assert response.status_code == 200
    lines = response.iter_lines()
    assert next(lines).startswith("data: ")
    return response, lines


def test_full_queue_gets_429_and_disconnects_free_the_cache(server, client):
    _idle(server)
    with httpx.Client(timeout=30) as http:
        streams = [_open_stream(server, http) for _ in range(2)]  # 2 running
        queued = http.send(http.build_request(  # + 1 queued: the limit
            "POST", server["url"] + "/v1/completions", headers={"Authorization": f"Bearer {API_KEY}"},
            json={"model": MODEL, "prompt": "Wait.", "max_tokens": 4, "stream": True}), stream=True)
        streams.append((queued, None))
        with pytest.raises(openai.RateLimitError):
            client.completions.create(model=MODEL, prompt="one more", max_tokens=4)
        assert httpx.get(server["url"] + "/health").json()["kv_cache_usage"] > 0
        for response, _ in streams:
            response.close()
    _idle(server)  # the closed streams were cancelled and their blocks freed
    with pytest.raises(httpx.ReadTimeout):  # a non-streaming client that gives up cancels too
        httpx.post(server["url"] + "/v1/completions", timeout=0.5, headers={"Authorization": f"Bearer {API_KEY}"},
                   json={"model": MODEL, "prompt": "Go on.", "max_tokens": 900, "temperature": 0})
    _idle(server)
    metrics = httpx.get(server["url"] + "/metrics").text
    for name in ("herd_requests_running", "herd_requests_waiting", "herd_kv_cache_usage_ratio",
                 "herd_generation_tokens_total", "herd_time_to_first_token_seconds_bucket",
                 "herd_time_per_output_token_seconds_bucket", 'herd_requests_finished_total{finish_reason="abort"}'):
        assert name in metrics


def test_chat_page_is_served(server):
    page = httpx.get(server["url"] + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert '"tiny"' in page.text and "/v1/chat/completions" in page.text
