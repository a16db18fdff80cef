"""The tool loop: generate; when the reply is a tool call, run it, append the assistant's call turn and the
`ipython` result, and generate again, until a final answer or `max_rounds` rounds of calls.

Used by `herd chat --tools`, `herd.generate(..., tools=...)` and evals. Dialogs are batched: each round
generates for every dialog still waiting for an answer in one `generate_tokens` call.

The tools (`TOOLS`) and how each is announced to the model in Llama 3.1's format:
- "python": the built-in code interpreter (`Environment: ipython`); the model writes `<|python_tag|>` + code and
  ends with `<|eom_id|>`; the code runs in herd's sandbox (`herd.eval.tool_executors.run_python`).
- "calculator": a custom JSON tool `calculator(expression)`, answered by the exact calculator.
- "wolfram_alpha": Llama 3.1's built-in math tool (`wolfram_alpha.call(query="...")`, on the `Tools:` line); herd
  has no Wolfram access, so its queries go to the exact calculator too (the shortest call format).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from herd.errors import HerdError
from herd.eval.tool_executors import calculate, run_python
from herd.generation import generate_tokens
from herd.model import Transformer
from herd.tokenizer import Message, Tokenizer, ToolCall, parse_tool_calls


@dataclass(frozen=True)
class Tool:
    """A tool the loop can run: how the system prompt declares it, the call name it answers, its executor."""

    declaration: str | dict[str, Any]
    """A built-in tool name or a custom function definition, as `herd.tokenizer.parse_tools` reads it."""
    call_name: str
    run: Callable[[Mapping[str, Any]], str]
    argument: str
    """The argument its executor reads."""


CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Exact arithmetic: + - * / // % ** and parentheses on integers and decimals",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string", "description": "The expression, e.g. 12 * (3 + 4)"}},
            "required": ["expression"],
        },
    },
}
TOOLS = {
    "python": Tool("code_interpreter", "code_interpreter", lambda args: run_python(args["code"]), "code"),
    "calculator": Tool(CALCULATOR, "calculator", lambda args: calculate(args["expression"]), "expression"),
    "wolfram_alpha": Tool("wolfram_alpha", "wolfram_alpha", lambda args: calculate(args["query"]), "query"),
}
DEFAULT_DATE = datetime.date(2024, 7, 23)
"""The system prompt's "Today Date" unless told otherwise: fixed, so that a dialog's ids do not change daily
(Llama 3.1's release day)."""


@dataclass(frozen=True)
class ToolExchange:
    """One executed call and the result the model read."""

    call: ToolCall
    result: str


@dataclass
class ToolReply:
    """How one dialog ended."""

    text: str
    """The final answer; when `max_rounds` ran out, a note saying so."""
    exchanges: list[ToolExchange] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    """The dialog after the loop: the input, each assistant call turn and ipython result, the final answer."""
    finished: bool = True
    """False when the model still called a tool after `max_rounds` rounds (that call was not run)."""


def resolve_tools(tools: Sequence[str] | str) -> list[str]:
    """Tool names from a list or a comma-separated string ("python,calculator"); HerdError on unknown names."""
    names = [t.strip() for t in tools.split(",")] if isinstance(tools, str) else list(tools)
    unknown = [name for name in names if name not in TOOLS]
    if not names or unknown:
        raise HerdError(f"unknown tool {(unknown or [''])[0]!r}; tools are {', '.join(TOOLS)}")
    return list(dict.fromkeys(names))


def tool_declarations(tools: Sequence[str]) -> list[str | dict[str, Any]]:
    """The `tools=` list for `Tokenizer.encode_dialog` that announces these tools."""
    return [TOOLS[name].declaration for name in resolve_tools(tools)]


def run_call(call: ToolCall, tools: Sequence[str]) -> str:
    """The result text of one call: its tool's output, or an error the model can read (never an exception)."""
    tool = next((TOOLS[name] for name in tools if TOOLS[name].call_name == call.name), None)
    if tool is None:
        offered = ", ".join(TOOLS[name].call_name for name in tools)
        return f"error: there is no tool {call.name!r}; the tools are {offered}"
    if not isinstance(call.arguments.get(tool.argument), str):
        return f"error: {call.name} needs the argument {tool.argument!r} (a string)"
    return tool.run(call.arguments)


def chat_with_tools(
    model: Transformer,
    tok: Tokenizer,
    dialogs: Sequence[Sequence[Message]],
    tools: Sequence[str] | str,
    *,
    max_rounds: int = 3,
    max_new_tokens: int = 256,
    date: datetime.date = DEFAULT_DATE,
    on_text: Callable[[int, str], None] | None = None,
    on_call: Callable[[int, ToolExchange], None] | None = None,
    **sampling: Any,
) -> list[ToolReply]:
    """Answer each dialog (a list of messages ending in a user or ipython turn), running its tool calls.

    `max_new_tokens` bounds each generation; `sampling` (temperature, top_p, top_k, seed) goes to
    `generate_tokens`. `on_text(i, piece)` streams dialog i's answer text (tool-call replies are not streamed),
    `on_call(i, exchange)` reports each executed call with its result.
    """
    names = resolve_tools(tools)
    if max_rounds < 0:
        raise HerdError(f"max_rounds must be >= 0, got {max_rounds}")
    declared = tool_declarations(names)
    replies = [ToolReply("", messages=[dict(m) for m in dialog]) for dialog in dialogs]
    waiting = list(range(len(replies)))
    for round_ in range(max_rounds + 1):
        if not waiting:
            break
        prompts = [tok.encode_dialog(replies[i].messages, tools=declared, date=date) for i in waiting]
        texts = _generate(model, tok, prompts, waiting, max_new_tokens, on_text, sampling)
        still = []
        for i, text in zip(waiting, texts, strict=True):
            reply = replies[i]
            content, calls = parse_tool_calls(text)
            if not calls:
                reply.text = content
                reply.messages.append({"role": "assistant", "content": content})
                continue
            if round_ == max_rounds:
                reply.finished = False
                reply.text = f"(stopped after {max_rounds} tool rounds: the model still called {calls[0].name})"
                continue
            reply.messages.append({"role": "assistant", "content": content,
                                   "tool_calls": [call.to_message() for call in calls]})
            for call in calls:
                exchange = ToolExchange(call, run_call(call, names))
                reply.exchanges.append(exchange)
                reply.messages.append({"role": "ipython", "content": exchange.result})
                if on_call is not None:
                    on_call(i, exchange)
            still.append(i)
        waiting = still
    return replies


def _generate(
    model: Transformer, tok: Tokenizer, prompts: list[list[int]], rows: list[int], max_new_tokens: int,
    on_text: Callable[[int, str], None] | None, sampling: dict[str, Any],
) -> list[str]:
    """Each prompt's reply as text, `<|python_tag|>` and a closing `<|eom_id|>` included (the parser reads them).

    `<|eom_id|>` ends a row through on_token rather than as a stop id, so that it stays in the reply. A reply
    that opens with `<|python_tag|>` is a call and is not streamed to `on_text`."""
    streams = [tok.stream_decoder() for _ in prompts]
    quiet: list[bool | None] = [None] * len(prompts)  # None until the row's first token

    def on_token(row: int, token: int) -> bool:
        if quiet[row] is None:
            quiet[row] = token == tok.python_tag_id
        piece = streams[row].push([token])
        if on_text is not None and piece and not quiet[row]:
            on_text(rows[row], piece)
        return token == tok.eom_id

    results = generate_tokens(model, prompts, max_new_tokens=max_new_tokens, stop_ids=tok.stop_ids - {tok.eom_id},
                              on_token=on_token, **sampling)
    for row, stream in enumerate(streams):
        tail = stream.flush()
        if on_text is not None and tail and not quiet[row]:
            on_text(rows[row], tail)
    return [tok.decode(result.tokens) for result in results]
