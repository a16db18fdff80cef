"""A guarded server keeps one OpenMP team: the guard's forward passes run on the thread that steps the engine
(AsyncEngine.call), not on a worker thread of their own, and refusals still come back as content_filter."""

from __future__ import annotations

import asyncio
import random
import threading

import pytest

import herd
from herd.safety.llama_guard import LlamaGuard
from herd.serve.async_engine import AsyncEngine, EngineStopped
from herd.serve.engine import Engine
from herd.serve.guardrails import Guardrails
from tests.live_server import live_server
from tests.serve.test_safety_guardrails import CALM, TAXONOMY, VIOLENT, _text, guard_dir  # noqa: F401 - a fixture

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")

from herd.serve.server import create_app


def _recording(obj: object, name: str, threads: list[int]) -> None:
    """Record the thread of each call to `obj.name` (which still runs)."""
    original = getattr(obj, name)

    def recorded(*args: object, **kwargs: object) -> object:
        threads.append(threading.get_ident())
        return original(*args, **kwargs)

    setattr(obj, name, recorded)


@pytest.mark.slow
def test_guard_runs_on_the_engine_thread(guard_dir):
    model, tok = herd.load("tiny")
    guard = LlamaGuard.load(guard_dir)
    guard_threads: list[int] = []
    step_threads: list[int] = []
    _recording(guard, "moderate", guard_threads)
    app = create_app(model, tok, model_name="tiny", guardrails=Guardrails(guard, taxonomy=TAXONOMY, check_every=2))
    _recording(app.state.runner.engine, "step", step_threads)
    rng = random.Random(7)
    with live_server(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="tiny", max_tokens=4, messages=[
                {"role": "user", "content": _text(rng, VIOLENT)}])
        assert refused.value.code == "content_filter"
        reply = client.chat.completions.create(model="tiny", max_tokens=4, messages=[
            {"role": "user", "content": _text(rng, CALM)}])
        assert reply.choices[0].finish_reason in ("stop", "length", "content_filter")
        stream = client.chat.completions.create(model="tiny", max_tokens=6, stream=True, messages=[
            {"role": "user", "content": _text(rng, CALM)}])
        assert sum(1 for c in stream if c.choices and c.choices[0].finish_reason) == 1
    assert len(guard_threads) >= 5  # three inputs, and the replies: at their end and every 2 streamed tokens
    assert set(step_threads) == set(guard_threads) and len(set(step_threads)) == 1


def test_call_runs_on_the_stepping_thread_and_fails_once_stopped():
    model, tok = herd.load("tiny")
    runner = AsyncEngine(Engine(model, tok), max_pending=4)
    results: dict[str, object] = {}

    def http() -> None:  # as herd serve: the engine steps on the caller's thread, the server on this one
        async def scenario() -> None:
            results["ident"] = await runner.call(threading.get_ident)
            with pytest.raises(ZeroDivisionError):
                await runner.call(lambda: 1 / 0)
            stopping, queued = threading.Event(), threading.Event()

            def last() -> str:
                runner.stop()  # the stop message goes ahead of the next call
                stopping.set()
                queued.wait(30)
                return "ran"

            first = asyncio.ensure_future(runner.call(last))
            await asyncio.to_thread(stopping.wait, 30)
            second = asyncio.ensure_future(runner.call(lambda: "never"))
            await asyncio.sleep(0)  # on the queue, behind the stop message
            queued.set()
            results["last"] = await first
            with pytest.raises(EngineStopped):
                await second
            with pytest.raises(EngineStopped):
                await runner.call(lambda: "after")

        asyncio.run(scenario())

    runner.run(http)
    assert results == {"ident": threading.get_ident(), "last": "ran"}
