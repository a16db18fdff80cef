"""The web chat page in headless Chromium, driven over W3C WebDriver (chromedriver) with plain HTTP calls."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

import herd
from tests.live_server import free_port, live_server

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() or shutil.which("chromedriver") is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
)
uvicorn = pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def url():
    from herd.serve.server import create_app

    model, tok = herd.load("tiny")
    with live_server(create_app(model, tok, model_name="tiny")) as base:
        yield base + "/"


@pytest.fixture(scope="module")
def browser():
    """A WebDriver session on headless Chromium: a function (method, path, body) -> the call's value."""
    port = free_port()
    driver = subprocess.Popen(["chromedriver", f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    http = httpx.Client(timeout=60)
    deadline = time.monotonic() + 30
    while True:
        try:
            if http.get(base + "/status").json()["value"]["ready"]:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "chromedriver did not start"
        time.sleep(0.1)
    options = {"binary": str(CHROMIUM), "args": ["--headless=new", "--no-sandbox", "--disable-gpu"]}
    created = http.post(base + "/session", json={"capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}})
    session = f"{base}/session/{created.json()['value']['sessionId']}"

    def call(method: str, path: str, body: dict | None = None):
        response = http.request(method, session + path, json=body)
        assert response.status_code == 200, response.text
        return response.json()["value"]

    yield call
    http.delete(session)
    driver.terminate()
    driver.wait(timeout=10)


def _element(browser, css: str) -> str:
    found = browser("POST", "/element", {"using": "css selector", "value": css})
    return next(iter(found.values()))


def _wait_for(browser, script: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (value := browser("POST", "/execute/sync", {"script": script, "args": []})):
        assert time.monotonic() < deadline, f"timed out waiting for: {script}"
        time.sleep(0.1)
    return value


def test_chat_page_streams_a_reply(url, browser):
    browser("POST", "/url", {"url": url})
    browser("POST", f"/element/{_element(browser, 'summary')}/click", {})  # open the settings
    system = _element(browser, "#system")
    browser("POST", f"/element/{system}/value", {"text": "You are terse."})
    browser("POST", "/execute/sync", {"script": "document.getElementById('max_tokens').value = '12';", "args": []})
    browser("POST", f"/element/{_element(browser, '#input')}/value", {"text": "Hello there"})
    browser("POST", f"/element/{_element(browser, '#send')}/click", {})
    assert _wait_for(browser, "return document.querySelector('.msg.user')?.textContent") == "Hello there"
    # The reply streams in; when it ends the Send button is enabled again and the reply joins the history.
    _wait_for(browser, "return !document.getElementById('send').disabled && dialog.length === 2")
    reply = browser("POST", "/execute/sync", {"script": "return dialog[1].content", "args": []})
    shown = browser("POST", "/execute/sync", {"script": "return document.querySelector('.msg.assistant').textContent",
                                              "args": []})
    assert reply and reply == shown
    assert browser("POST", "/execute/sync", {"script": "return document.querySelector('.msg.error')", "args": []}) is None


def _aborts(url: str) -> float:
    metrics = httpx.get(url + "metrics").text
    line = next((ln for ln in metrics.splitlines() if ln.startswith('herd_requests_finished_total{finish_reason="abort"}')),
                None)
    return float(line.split()[-1]) if line else 0.0


def _run(browser, script: str):
    return browser("POST", "/execute/sync", {"script": script, "args": []})


def test_stop_button_ends_the_stream_and_frees_the_request(url, browser):
    browser("POST", "/url", {"url": url})
    _run(browser, "document.getElementById('max_tokens').value = '1000'; "
                  "document.getElementById('temperature').value = '0';")
    before = _aborts(url)
    browser("POST", f"/element/{_element(browser, '#input')}/value", {"text": "Tell me a very long story"})
    browser("POST", f"/element/{_element(browser, '#send')}/click", {})
    _wait_for(browser, "return document.querySelector('.msg.assistant')?.textContent.length > 0")
    assert httpx.get(url + "health").json()["running"] == 1
    browser("POST", f"/element/{_element(browser, '#stop')}/click", {})
    # The page is idle again at once, keeping the partial reply, and the server cancelled the generation.
    _wait_for(browser, "return !document.getElementById('send').disabled && document.getElementById('stop').disabled")
    shown = _run(browser, "return document.querySelector('.msg.assistant').textContent")
    deadline = time.monotonic() + 10
    while (health := httpx.get(url + "health").json())["running"] or health["kv_cache_usage"]:
        assert time.monotonic() < deadline, f"the server still holds the request: {health}"
        time.sleep(0.05)
    assert _aborts(url) == before + 1
    time.sleep(0.5)
    assert _run(browser, "return document.querySelector('.msg.assistant').textContent") == shown  # no more text
    assert _run(browser, "return dialog.length") == 2 and _run(browser, "return dialog[1].content") == shown
    assert _run(browser, "return document.querySelector('.msg.error')") is None
