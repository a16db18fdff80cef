"""Multi-turn chat in the Llama 3 chat format: a session that keeps the dialog, and the terminal loop.

`herd chat` reads one user message per line (a terminal or piped stdin) and streams each reply. With tools
(`--tools python,calculator`) each reply goes through herd.eval.tool_use's loop, and every call and its result
is printed as it runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TextIO

from herd.generation import generate_tokens
from herd.generation.background_compile import BackgroundCompile
from herd.generation.decode_step import choose_chat_path
from herd.model import Transformer
from herd.tokenizer import Tokenizer

if TYPE_CHECKING:  # the tool loop (herd.eval) is imported only by sessions with tools
    from herd.eval.tool_use import ToolExchange

COMMANDS_HELP = "/reset clears the dialog, /exit quits"


class ChatSession:
    """A dialog with one model; each `reply` appends the user turn and the model's answer (with `tools`, also
    its tool calls and their results, at most `max_tool_rounds` rounds a reply). `compile` (in `sampling`, default
    False) picks the decode path by `choose_chat_path`: None (auto) compiles in the background where it pays."""

    def __init__(
        self, model: Transformer, tok: Tokenizer, *, system: str | None = None, tools: Sequence[str] | str = (),
        max_tool_rounds: int = 3, **sampling: object,
    ) -> None:
        path = choose_chat_path(model, sampling.get("compile", False))[0]
        sampling["compile"] = BackgroundCompile(model) if path == "background" else path == "compiled"
        self.model, self.tok, self.system, self.sampling = model, tok, system, sampling
        if tools:
            from herd.eval.tool_use import resolve_tools

            tools = resolve_tools(tools)
        self.tools, self.max_tool_rounds = list(tools), max_tool_rounds
        self.messages: list[dict] = []
        self.reset()

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    def reply(
        self, user_text: str, on_text: Callable[[str], None] | None = None,
        on_call: Callable[[ToolExchange], None] | None = None,
    ) -> str:
        """The assistant's answer to `user_text`, streamed piece by piece to `on_text`; `on_call` gets each tool
        call with its result as it runs."""
        self.messages.append({"role": "user", "content": user_text})
        answer = self._reply_with_tools(on_text, on_call) if self.tools else self._reply(on_text)
        if isinstance(self.sampling["compile"], BackgroundCompile):
            self.sampling["compile"].start()  # if not started yet: while the user reads this reply
        return answer

    def _reply(self, on_text: Callable[[str], None] | None) -> str:
        prompt = self.tok.encode_dialog(self.messages)
        stream = self.tok.stream_decoder()
        pieces: list[str] = []

        def on_token(_row: int, token: int) -> None:
            piece = stream.push([token])
            pieces.append(piece)
            if on_text and piece:
                on_text(piece)

        result = generate_tokens(self.model, [prompt], stop_ids=self.tok.stop_ids, on_token=on_token, **self.sampling)
        tail = stream.flush()
        if on_text and tail:
            on_text(tail)
        answer = self.tok.decode(result[0].tokens)
        self.messages.append({"role": "assistant", "content": answer})
        return answer

    def _reply_with_tools(
        self, on_text: Callable[[str], None] | None, on_call: Callable[[ToolExchange], None] | None
    ) -> str:
        from herd.eval.tool_use import chat_with_tools

        [result] = chat_with_tools(
            self.model, self.tok, [self.messages], self.tools, max_rounds=self.max_tool_rounds,
            on_text=on_text and (lambda _i, piece: on_text(piece)), on_call=on_call and (lambda _i, ex: on_call(ex)),
            **self.sampling,
        )
        self.messages = result.messages
        if not result.finished and on_text:
            on_text(result.text)
        return result.text


def describe_call(exchange: ToolExchange) -> str:
    """Two lines for the terminal: the call (code as written, other calls as name(arguments)) and its result."""
    call = exchange.call
    shown = call.arguments.get("code") if call.name == "code_interpreter" else None
    shown = shown if isinstance(shown, str) else f"{call.name}({json.dumps(call.arguments)})"
    return f"[tool call] {shown}\n[tool result] {exchange.result}"


def run_chat(
    model: Transformer, tok: Tokenizer, stdin: TextIO, stdout: TextIO, *, system: str | None = None,
    tools: Sequence[str] | str = (), max_tool_rounds: int = 3, **sampling: object,
) -> None:
    """Read user lines from `stdin` until EOF or /exit, stream replies (and tool calls with results) to `stdout`."""
    session = ChatSession(model, tok, system=system, tools=tools, max_tool_rounds=max_tool_rounds, **sampling)
    interactive = stdin.isatty()
    if interactive:
        print(f"chatting with the model ({COMMANDS_HELP})", file=stdout)
    while True:
        if interactive:
            print("> ", end="", file=stdout, flush=True)
        line = stdin.readline()
        if not line or line.strip() == "/exit":
            break
        text = line.strip()
        if not text:
            continue
        if text == "/reset":
            session.reset()
            continue
        if not interactive:
            print(f"> {text}", file=stdout)
        session.reply(text, on_text=lambda piece: print(piece, end="", file=stdout, flush=True),
                      on_call=lambda exchange: print(describe_call(exchange), file=stdout, flush=True))
        print(file=stdout, flush=True)
