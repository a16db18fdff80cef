"""The web chat page in headless Chromium, driven over W3C WebDriver (chromedriver) with plain HTTP calls."""

from __future__ import annotations

import datetime
import json
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


def test_replies_render_as_text_and_code_blocks_never_as_html(url, browser):
    browser("POST", "/url", {"url": url})
    hostile = ("Look: <img src=x onerror=\"window.pwned=1\"> and\n```python\nprint('<b>hi</b>')\n```\n"
               "<script>window.pwned=2</script>")
    _run(browser, f"show('assistant', {json.dumps(hostile)});")
    time.sleep(0.5)  # an injected onerror would have fired by now
    assert _run(browser, "return document.querySelector('#log img, #log script, #log b')") is None
    assert _run(browser, "return window.pwned === undefined")
    assert _run(browser, "return document.querySelector('.msg.assistant pre code.language-python').textContent") == (
        "print('<b>hi</b>')\n")
    assert _run(browser, "return document.querySelector('.msg.assistant').textContent") == hostile.replace(
        "```python\n", "").replace("```", "")


CALCULATOR_DIALOG = [
    {"role": "user", "content": "what is 7 times 8"},
    {"role": "assistant", "content": "", "tool_calls": [{"name": "calculator", "arguments": {"expression": "7 * 8"}}]},
    {"role": "ipython", "content": "56"},
    {"role": "assistant", "content": "The answer is 56."},
]


@pytest.fixture(scope="module")
def tool_url(tmp_path_factory):
    """A server whose tiny model was taught CALCULATOR_DIALOG under the calculator tool the page offers (its
    tokenizer trained on the tool prompts, so that Meta's long tool template stays a few tokens)."""
    from herd.eval.tool_use import CALCULATOR
    from herd.serve.server import create_app
    from herd.tokenizer import Tokenizer, custom_tools_prompt, parse_tools, system_prompt, tool_call_text
    from herd.tokenizer.train_bpe import train_tokenizer
    from tests.eval.tool_model import train_tool_caller

    today = datetime.date.today()  # the server's tool prompt carries today's date
    tools = parse_tools([CALCULATOR])
    words = [system_prompt(tools, None, today), custom_tools_prompt(tools.custom),
             tool_call_text(CALCULATOR_DIALOG[1]["tool_calls"][0]), "what is 7 times 8 The answer is 56. user "
             "assistant ipython system"]
    tok = Tokenizer(train_tokenizer(words * 20, 480, tmp_path_factory.mktemp("webtools") / "tok.model",
                                    show_progress=False))
    model = train_tool_caller(tok, [(CALCULATOR_DIALOG, [CALCULATOR])], today, max_seq_len=512)
    with live_server(create_app(model, tok, model_name="tiny")) as base:
        yield base + "/"


def test_a_tool_call_runs_and_its_call_and_result_show_as_collapsible_entries(tool_url, browser):
    browser("POST", "/url", {"url": tool_url})
    assert _run(browser, "return [...document.querySelectorAll('input.tool')].map((box) => box.value)") == [
        "calculator"]  # the server's default tools: the calculator alone
    _run(browser, "document.querySelector('input.tool[value=calculator]').checked = true; "
                  "document.getElementById('max_tokens').value = '40'; "
                  "document.getElementById('temperature').value = '0';")
    browser("POST", f"/element/{_element(browser, '#input')}/value", {"text": "what is 7 times 8"})
    browser("POST", f"/element/{_element(browser, '#send')}/click", {})
    _wait_for(browser, "return !document.getElementById('send').disabled && dialog.length === 4")
    assert _run(browser, "return document.querySelector('.msg.error')") is None
    entries = _run(browser, "return [...document.querySelectorAll('#log .msg')].map((e) => "
                            "[e.tagName, e.className, e.querySelector('summary')?.textContent, "
                            "(e.querySelector('pre') || e).textContent])")
    assert entries == [
        ["DIV", "msg user", None, "what is 7 times 8"],
        ["DETAILS", "msg tool-call", "Tool call: calculator", '{"expression": "7 * 8"}'],
        ["DETAILS", "msg tool-result", "Result of calculator", "56"],  # computed by the server's calculator
        ["DIV", "msg assistant", None, "The answer is 56."],
    ]
    assert _run(browser, "return document.querySelector('details.tool-call').open") is False  # collapsed
    dialog = _run(browser, "return dialog")
    call = dialog[1]["tool_calls"][0]
    assert call["id"].startswith("call_") and call["function"] == {"name": "calculator",
                                                                    "arguments": '{"expression": "7 * 8"}'}
    assert dialog[2] == {"role": "tool", "tool_call_id": call["id"], "content": "56"}
    assert dialog[3] == {"role": "assistant", "content": "The answer is 56."}


def test_json_mode_asks_for_and_gets_a_json_object(url, browser):
    browser("POST", "/url", {"url": url})
    # Record what the page sends (the request itself still goes to the server).
    _run(browser, "window.sent = []; const real = window.fetch; window.fetch = (path, init) => "
                  "{ window.sent.push([path, JSON.parse(init.body)]); return real(path, init); }; "
                  "document.getElementById('json_mode').checked = true; "
                  "document.getElementById('max_tokens').value = '6';")
    browser("POST", f"/element/{_element(browser, '#input')}/value", {"text": "Hi"})
    browser("POST", f"/element/{_element(browser, '#send')}/click", {})
    _wait_for(browser, "return !document.getElementById('send').disabled && dialog.length === 2")
    path, body = _run(browser, "return window.sent[0]")
    assert path == "/v1/chat/completions" and body["response_format"] == {"type": "json_object"}
    assert "tools" not in body  # none ticked
    assert _run(browser, "return dialog[1].content").lstrip().startswith("{")  # the server's grammar held
    assert _run(browser, "return document.querySelector('.msg.error')") is None
