"""The web chat's tool runner: `POST /v1/tools/run` runs one tool call with herd's executors, for the page's tool
loop. The OpenAI API leaves running tools to the client, and a browser can run neither an exact calculator nor
sandboxed Python, so the page asks its server.

Only the tools the app was created with run (`create_app(web_tools=...)`); the default is the calculator alone, which
computes arithmetic and nothing else. "python" runs code in herd's sandbox (herd.eval.sandbox, with its limits):
enable it only where the server's users may run code. It runs for anyone only behind an API key: without one,
`herd serve` refuses to start with it unless it binds a loopback address (`check_exposure`), and a call from
another machine gets 403. A call's failure (bad arguments, a crash, a limit) is the
result the model reads, not an HTTP error.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from herd.errors import HerdError
from herd.eval.tool_executors import calculate, run_python
from herd.eval.tool_use import CALCULATOR

PYTHON = {
    "type": "function",
    "function": {
        "name": "python",
        "description": "Run Python code in a sandbox and see what it prints",
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string", "description": "The program; print the values to see"}},
            "required": ["code"],
        },
    },
}
WEB_TOOLS: dict[str, tuple[dict[str, Any], str, Callable[[str], str]]] = {
    "calculator": (CALCULATOR, "expression", calculate),
    "python": (PYTHON, "code", run_python),
}
"""Tool name -> (its OpenAI function definition, the argument its executor reads, the executor)."""


class ToolRun(BaseModel):
    name: str
    arguments: str | dict[str, Any]
    """As the call's `function.arguments` came (a JSON string), or already parsed."""


def check_tools(tools: Sequence[str]) -> list[str]:
    unknown = [name for name in tools if name not in WEB_TOOLS]
    if unknown:
        raise HerdError(f"unknown tool {unknown[0]!r} for the web chat; tools are {', '.join(WEB_TOOLS)}")
    return list(dict.fromkeys(tools))


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or "localhost") is this machine's loopback, which no other machine reaches."""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(tools: Sequence[str], host: str, api_key: str | None) -> None:
    """HerdError when "python" would run code for anyone who reaches `host`: no API key and not a loopback bind."""
    if "python" in tools and api_key is None and not is_loopback(host):
        raise HerdError(f"--web-tools python would run code for anyone who reaches {host}: set an API key "
                        "(--api-key-file or $HERD_API_KEY) or bind --host 127.0.0.1")


def add_tool_runner(app: FastAPI, tools: Sequence[str], dependencies: list, *, keyed: bool) -> list[dict[str, Any]]:
    """Add `POST /v1/tools/run` to `app` for `tools`; returns their definitions (what the page offers). Without
    an API key (`keyed` False) python runs only for clients on this machine (403 otherwise)."""
    enabled = check_tools(tools)

    @app.post("/v1/tools/run", dependencies=dependencies)
    async def run_tool(body: ToolRun, request: Request) -> dict[str, str]:
        if body.name not in enabled:
            raise HTTPException(404, f"this server runs no tool {body.name!r}; it runs {', '.join(enabled) or 'none'}")
        if body.name == "python" and not keyed and not is_loopback(request.client.host if request.client else ""):
            raise HTTPException(403, "python runs only for clients on the server's machine when it has no API key; "
                                "start it with one to run python for others")
        _definition, argument, execute = WEB_TOOLS[body.name]
        return {"content": await run_in_threadpool(_run, execute, argument, body.arguments)}

    return [WEB_TOOLS[name][0] for name in enabled]


def _run(execute: Callable[[str], str], argument: str, arguments: str | dict[str, Any]) -> str:
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return "error: the call's arguments are not JSON"
    value = arguments.get(argument) if isinstance(arguments, dict) else None
    if not isinstance(value, str):
        return f"error: the call needs the argument {argument!r} (a string)"
    return execute(value)
