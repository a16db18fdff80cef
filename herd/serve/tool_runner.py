"""The web chat's tool runner: `POST /v1/tools/run` runs one tool call with herd's executors, for the page's tool
loop. The OpenAI API leaves running tools to the client, and a browser can run neither an exact calculator nor
sandboxed Python, so the page asks its server.

Only the tools the app was created with run (`create_app(web_tools=...)`); the default is the calculator alone, which
computes arithmetic and nothing else. "python" runs code in herd's sandbox (herd.eval.sandbox, with its limits):
enable it only where the server's users may run code. A call's failure (bad arguments, a crash, a limit) is the
result the model reads, not an HTTP error.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI, HTTPException
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


def add_tool_runner(app: FastAPI, tools: Sequence[str], dependencies: list) -> list[dict[str, Any]]:
    """Add `POST /v1/tools/run` to `app` for `tools`; returns their definitions (what the page offers)."""
    enabled = check_tools(tools)

    @app.post("/v1/tools/run", dependencies=dependencies)
    async def run_tool(body: ToolRun) -> dict[str, str]:
        if body.name not in enabled:
            raise HTTPException(404, f"this server runs no tool {body.name!r}; it runs {', '.join(enabled) or 'none'}")
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
