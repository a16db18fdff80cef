"""Multi-turn chat in the Llama 3 chat format: a session that keeps the dialog, and the terminal loop.

`herd chat` reads one user message per line (a terminal or piped stdin) and streams each reply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TextIO

from herd.generation import generate_tokens
from herd.model import Transformer
from herd.tokenizer import Tokenizer

COMMANDS_HELP = "/reset clears the dialog, /exit quits"


class ChatSession:
    """A dialog with one model; each `reply` appends the user turn and the model's answer."""

    def __init__(self, model: Transformer, tok: Tokenizer, *, system: str | None = None, **sampling: object) -> None:
        self.model, self.tok, self.system, self.sampling = model, tok, system, sampling
        self.messages: list[dict[str, str]] = []
        self.reset()

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    def reply(self, user_text: str, on_text: Callable[[str], None] | None = None) -> str:
        """The assistant's answer to `user_text`, streamed piece by piece to `on_text`."""
        self.messages.append({"role": "user", "content": user_text})
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


def run_chat(
    model: Transformer, tok: Tokenizer, stdin: TextIO, stdout: TextIO, *, system: str | None = None, **sampling: object
) -> None:
    """Read user lines from `stdin` until EOF or /exit, stream replies to `stdout`."""
    session = ChatSession(model, tok, system=system, **sampling)
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
        session.reply(text, on_text=lambda piece: print(piece, end="", file=stdout, flush=True))
        print(file=stdout, flush=True)
