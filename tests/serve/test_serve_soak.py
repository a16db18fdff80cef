"""A reduced soak of the live server: concurrent requests, some clients hanging up midway; nothing fails or leaks."""

from __future__ import annotations

import asyncio
import logging

import pytest

import herd

uvicorn = pytest.importorskip("uvicorn")

from soak_client import soak, wait_idle

from herd.serve import EngineConfig
from herd.serve.server import create_app
from tests.live_server import live_server


@pytest.fixture(scope="module")
def url():
    model, tok = herd.load("tiny")
    app = create_app(model, tok, model_name="tiny", engine_config=EngineConfig(max_running=8, block_size=8))
    with live_server(app) as base:
        yield base


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_requests_with_disconnects_all_end_cleanly(url):
    errors = _Records()
    logger = logging.getLogger("uvicorn.error")  # where uvicorn reports an exception in the app
    logger.addHandler(errors)
    try:
        report = asyncio.run(soak(url, "tiny", requests=40, concurrency=8, disconnect=0.3, max_tokens=(8, 64), seed=1))
    finally:
        logger.removeHandler(errors)
    assert not errors.records, errors.records[0].getMessage()
    assert report.server_errors == 0 and report.rejected == 0, report.errors
    assert report.incomplete == 0, report.errors
    assert report.completed + report.cancelled == report.sent == 40
    assert report.cancelled >= 5 and report.tokens > 0
    wait_idle(url, timeout=10)  # every cancelled request was dropped and its cache blocks freed
