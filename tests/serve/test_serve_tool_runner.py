"""POST /v1/tools/run, the web chat's tool runner: only the tools the app enables run, behind the API key; a
call's failure is a result for the model, not an HTTP error."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

import herd
from herd.errors import HerdError
from tests.live_server import free_port, live_server, wait_healthy

pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def apps():
    from herd.serve.server import create_app

    model, tok = herd.load("tiny")
    with live_server(create_app(model, tok, model_name="tiny")) as default, \
            live_server(create_app(model, tok, model_name="tiny", api_key="k", web_tools=["python"])) as python:
        yield {"default": default, "python": python}


def _run(base: str, name: str, arguments, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(base + "/v1/tools/run", json={"name": name, "arguments": arguments}, headers=headers,
                      timeout=60)


def test_the_calculator_runs_by_default_and_python_does_not(apps):
    assert _run(apps["default"], "calculator", '{"expression": "2 ** 70 / 4"}').json() == {
        "content": "295147905179352825856"}
    assert _run(apps["default"], "calculator", {"expression": "1/0"}).json() == {"content": "error: division by zero"}
    refused = _run(apps["default"], "python", '{"code": "print(1)"}')
    assert refused.status_code == 404 and "runs no tool 'python'; it runs calculator" in refused.text


def test_python_runs_in_the_sandbox_where_enabled_behind_the_key(apps):
    assert _run(apps["python"], "python", '{"code": "print(6 * 7)"}').status_code == 401
    assert _run(apps["python"], "python", '{"code": "print(6 * 7)"}', key="k").json() == {
        "content": "completed\n[stdout]\n42\n[/stdout]"}
    assert _run(apps["python"], "calculator", '{"expression": "1"}', key="k").status_code == 404


def test_bad_arguments_are_results_the_model_reads(apps):
    assert _run(apps["default"], "calculator", "{not json").json() == {
        "content": "error: the call's arguments are not JSON"}
    assert _run(apps["default"], "calculator", '{"expr": "1 + 1"}').json() == {
        "content": "error: the call needs the argument 'expression' (a string)"}


def test_python_without_a_key_runs_only_for_this_machine():
    from fastapi.testclient import TestClient

    from herd.serve.server import create_app

    model, tok = herd.load("tiny")
    app = create_app(model, tok, web_tools=["python", "calculator"])
    with live_server(app) as local:  # bound to 127.0.0.1: the client is this machine
        ran = _run(local, "python", '{"code": "print(6 * 7)"}')
        assert ran.json() == {"content": "completed\n[stdout]\n42\n[/stdout]"}
    remote = TestClient(app, client=("203.0.113.7", 50000))  # a client on another machine
    refused = remote.post("/v1/tools/run", json={"name": "python", "arguments": '{"code": "print(1)"}'})
    assert refused.status_code == 403 and "python runs only for clients on the server's machine" in refused.text
    assert remote.post("/v1/tools/run", json={"name": "calculator", "arguments": {"expression": "2 + 3"}}).json() == {
        "content": "5"}
    keyed = TestClient(create_app(model, tok, api_key="k", web_tools=["python"]), client=("203.0.113.7", 50000))
    ran = keyed.post("/v1/tools/run", json={"name": "python", "arguments": '{"code": "print(6 * 7)"}'},
                     headers={"Authorization": "Bearer k"})
    assert ran.json() == {"content": "completed\n[stdout]\n42\n[/stdout]"}


@pytest.mark.parametrize("host, key, refused", [
    ("0.0.0.0", None, True), ("192.168.1.5", None, True), ("::", None, True), ("example.org", None, True),
    ("127.0.0.1", None, False), ("localhost", None, False), ("::1", None, False), ("0.0.0.0", "k", False),
])
def test_serve_refuses_python_open_to_other_machines(host, key, refused):
    from herd.serve.server import serve
    from herd.serve.tool_runner import check_exposure

    if refused:
        with pytest.raises(HerdError, match=f"^--web-tools python would run code for anyone who reaches {host}: set an "
                           r"API key \(--api-key-file or \$HERD_API_KEY\) or bind --host 127.0.0.1$"):
            serve("no-such-model", host=host, api_key=key, web_tools=["python"])  # before loading anything
    else:
        check_exposure(["python"], host, key)
    check_exposure(["calculator"], host, None)


def test_unknown_web_tools_are_refused():
    from herd.serve.server import create_app

    model, tok = herd.load("tiny")
    with pytest.raises(HerdError, match="unknown tool 'bash' for the web chat; tools are calculator, python"):
        create_app(model, tok, web_tools=["calculator", "bash"])


@pytest.mark.slow
def test_herd_serve_web_tools_flag(tmp_path):
    port = free_port()
    command = [sys.executable, "-m", "herd.cli", "serve", "--model", "tiny", "--port", str(port)]
    server = subprocess.Popen([*command, "--web-tools", "python"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, server)
        ran = _run(base, "python", '{"code": "print(6 * 7)"}')
        assert ran.json() == {"content": "completed\n[stdout]\n42\n[/stdout]"}
        assert _run(base, "calculator", '{"expression": "1"}').status_code == 404
        assert '"name": "python"' in httpx.get(base + "/").text  # the page offers what the server runs
    finally:
        server.terminate()
        server.wait(timeout=30)
    refused = subprocess.run([*command, "--web-tools", "calculator,bash"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert refused.stderr == "herd: error: unknown tool 'bash' for the web chat; tools are calculator, python\n"
    open_python = subprocess.run([*command, "--host", "0.0.0.0", "--web-tools", "python"], capture_output=True,
                                 text=True, timeout=120, env={**os.environ, "HERD_API_KEY": ""})
    assert open_python.returncode == 2 and open_python.stderr.startswith(
        "herd: error: --web-tools python would run code for anyone who reaches 0.0.0.0: set an API key")
    assert len(open_python.stderr.splitlines()) == 1
