"""Guardrails for `herd serve`: a Llama Guard checks each user turn before generation and each reply after it
(streamed replies chunk by chunk, text released only once checked), and Code Shield scans the code in replies.

A refused request gets an OpenAI-style 400 body with code "content_filter"; a refused reply ends with
finish_reason "content_filter" and a message naming the violated categories (or the insecure code's rules).
A malformed guard answer refuses too (fail closed). Decisions are counted in the server's Prometheus registry.
In a server the guard's forward passes run on the engine's thread between its steps (`attach`): on a thread of their
own they would start a second OpenMP team, and the engine's would sleep at its barriers (herd.serve.async_engine).
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter

from herd.safety.codeshield import LANGUAGES, scan
from herd.safety.llama_guard import GuardVerdict, LlamaGuard
from herd.safety.taxonomy import LLAMA_GUARD_2, Taxonomy
from herd.serve.request import StepOutput
from herd.tokenizer import Message

Outputs = AsyncIterator[tuple[int, StepOutput]]
CODE_BLOCK = re.compile(r"```([\w+#.-]*)[^\n]*\n(.*?)```", re.DOTALL)
"""A closed Markdown code fence: its language tag and its code."""
ALIASES = {"py": "python", "python3": "python", "c++": "cpp", "cxx": "cpp", "js": "javascript", "ts": "javascript",
           "typescript": "javascript", "node": "javascript", "rs": "rust", "cs": "csharp", "c#": "csharp",
           "rb": "ruby", "kt": "kotlin"}
"""Fence tags people write and the language Code Shield scans them as."""


def guarded_turns(messages: Sequence[Message]) -> list[Message]:
    """The user and assistant turns of a chat (system and tool turns are not judged)."""
    return [{"role": m["role"], "content": m["content"]} for m in messages if m["role"] in ("user", "assistant")]


def describe(verdict: GuardVerdict) -> str:
    """What the guard found, for a refusal message: "S1: Violent Crimes, S9: Hate" or the malformed answer."""
    if verdict.verdict == "malformed":
        return f"the guard's answer was malformed ({verdict.output.strip()[:60]!r}), so it is refused"
    return ", ".join(f"{c}: {name}" for c, name in zip(verdict.codes, verdict.categories, strict=True))


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of each closed code fence whose tag Code Shield knows."""
    known = set(LANGUAGES.values())
    blocks = []
    for tag, code in CODE_BLOCK.findall(text):
        language = ALIASES.get(tag.lower(), tag.lower())
        if language in known:
            blocks.append((language, code))
    return blocks


class Guardrails:
    """The server's input/output checks: a guard model (optional) and Code Shield (optional)."""

    def __init__(self, guard: LlamaGuard | None = None, *, code_shield: bool = False,
                 taxonomy: Taxonomy = LLAMA_GUARD_2, threshold: float = 0.5, check_every: int = 16) -> None:
        self.guard, self.code_shield, self.taxonomy, self.threshold = guard, code_shield, taxonomy, threshold
        self.check_every = check_every
        """Streamed replies are checked every this many tokens (and at their end); nothing unchecked is sent."""
        self._lock = threading.Lock()
        self._run: Callable[[Callable[[], GuardVerdict]], Awaitable[GuardVerdict]] = asyncio.to_thread
        self._guard_decisions: Counter | None = None
        self._code_decisions: Counter | None = None

    @classmethod
    def load(cls, guard: str | Path | None, *, code_shield: bool = False, device: str = "cpu",
             **kwargs) -> Guardrails:
        """Guardrails with the guard at `guard` (anything herd.load reads, loaded on `device`; None for Code Shield
        alone)."""
        return cls(LlamaGuard.load(guard, device=device) if guard else None, code_shield=code_shield, **kwargs)

    def register(self, registry: CollectorRegistry) -> None:
        """Count decisions in `registry` (the server's, rendered at /metrics)."""
        self._guard_decisions = Counter("herd_guard_decisions", "Guard decisions, by stage and verdict",
                                        ["stage", "verdict"], registry=registry)
        self._code_decisions = Counter("herd_codeshield_decisions", "Code Shield verdicts on code in replies",
                                       ["verdict"], registry=registry)

    def attach(self, run: Callable[[Callable[[], GuardVerdict]], Awaitable[GuardVerdict]]) -> None:
        """Run the guard's checks through `run` (a server's `AsyncEngine.call`) instead of a worker thread."""
        self._run = run

    def _moderate(self, turns: list[Message], stage: str) -> GuardVerdict:
        with self._lock:  # one guard forward at a time, off the event loop
            verdict = self.guard.moderate([turns], self.taxonomy, self.threshold)[0]
        if self._guard_decisions is not None:
            self._guard_decisions.labels(stage, verdict.verdict).inc()
        return verdict

    async def check_input(self, messages: Sequence[Message]) -> dict | None:
        """None when the chat may go to the model; else the OpenAI-style 400 body naming what the guard found
        in the last user turn."""
        turns = guarded_turns(messages)
        last_user = max((i for i, m in enumerate(turns) if m["role"] == "user"), default=None)
        if self.guard is None or last_user is None:
            return None
        verdict = await self._run(partial(self._moderate, turns[: last_user + 1], "input"))
        if verdict.verdict == "safe":
            return None
        message = f"the request was refused by the guard: its last user message is unsafe ({describe(verdict)})"
        return {"error": {"message": message, "type": "invalid_request_error", "param": "messages",
                          "code": "content_filter"}}

    async def _check_reply(self, turns: list[Message], reply: str) -> str | None:
        """None when `reply` (so far) passes; else why it is refused."""
        if self.guard is not None and reply.strip():
            turns = [*turns, {"role": "assistant", "content": reply}]
            verdict = await self._run(partial(self._moderate, turns, "output"))
            if verdict.verdict != "safe":
                return f"the reply was refused by the guard as unsafe ({describe(verdict)})"
        return await asyncio.to_thread(self._code_shield_refusal, reply) if self.code_shield else None

    def _code_shield_refusal(self, reply: str) -> str | None:
        """None when Code Shield passes the code in `reply`; else why it is refused."""
        for language, code in code_blocks(reply):
            result = scan(code, language)
            if self._code_decisions is not None:
                self._code_decisions.labels(result.verdict).inc()
            if result.verdict == "BLOCK":
                found = ", ".join(f"{f.rule} ({f.cwe}, line {f.line})" for f in result.findings
                                  if f.severity == "error")
                return f"the reply was refused by Code Shield: insecure {language} code: {found}"
        return None

    async def screen(self, messages: Sequence[Message], outputs: Outputs, *, choices: int, stream: bool) -> Outputs:
        """`outputs` of `choices` choices with each one's text held back until checked: at its end, and every
        `check_every` tokens when streamed. A refused choice ends with its refusal as text and finish_reason
        "content_filter"; the rest of its generation is dropped (aborted once no choice is left)."""
        turns = guarded_turns(messages)
        held: dict[int, list[StepOutput]] = {}
        texts: dict[int, str] = {}
        closed: set[int] = set()
        try:
            async for index, out in outputs:
                if index in closed:
                    continue
                held.setdefault(index, []).append(out)
                texts[index] = texts.get(index, "") + out.text
                due = out.finish_reason is not None or (stream and len(held[index]) >= self.check_every)
                if not due:
                    continue
                refusal = await self._check_reply(turns, texts[index])
                if refusal is None:
                    for passed in held.pop(index):
                        yield index, passed
                else:
                    held.pop(index)
                    yield index, replace(out, token_id=None, text=refusal, logprob=None, top_logprobs=None,
                                         finish_reason="content_filter")
                if refusal is not None or out.finish_reason is not None:
                    closed.add(index)
                if len(closed) == choices:
                    break
        finally:
            await outputs.aclose()
