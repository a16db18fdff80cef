"""The OpenAI API's request bodies (validated by pydantic) and the builders of its response shapes.

Covers /v1/chat/completions and /v1/completions: n, stop, max_tokens, temperature, top_p, seed, logprobs /
top_logprobs, streaming chunks and usage; `top_k` and `stop_token_ids` are accepted as extensions (as vLLM does).
Limits beyond OpenAI's own: at most MAX_STOPS stop strings of at most MAX_STOP_CHARS characters each (OpenAI
takes 4), at most MAX_STOP_TOKEN_IDS stop token ids, and a seed in 0..2^64-1 (what torch's generators take).
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator

from herd.errors import HerdError
from herd.serve.request import MAX_SEED, RequestParams, StepOutput
from herd.tokenizer import Tokenizer

NonNegative = Annotated[int, Field(ge=0)]
MAX_STOPS = 16
MAX_STOP_CHARS = 256
MAX_STOP_TOKEN_IDS = 64


class StreamOptions(BaseModel):
    include_usage: bool = False


class SamplingFields(BaseModel):
    """The fields both endpoints share."""

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    n: int = Field(1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[NonNegative] | None = Field(None, max_length=MAX_STOP_TOKEN_IDS)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)

    @field_validator("stop")
    @classmethod
    def _stop_within_limits(cls, stop: str | list[str] | None) -> str | list[str] | None:
        stops = _listed(stop)
        if len(stops) > MAX_STOPS:
            raise ValueError(f"{len(stops)} stop strings, over the limit of {MAX_STOPS}")
        if any(len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(f"a stop string is over the limit of {MAX_STOP_CHARS} characters")
        return stop

    def params(self, max_tokens: int, choice: int, logprobs: bool, top_logprobs: int) -> RequestParams:
        """Engine parameters for choice `choice` (seeded choices differ from each other but are reproducible)."""
        return RequestParams(
            max_tokens=max_tokens, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
            seed=None if self.seed is None else (self.seed + choice) % (MAX_SEED + 1), stop=tuple(_listed(self.stop)),
            stop_token_ids=tuple(self.stop_token_ids or ()), logprobs=logprobs, top_logprobs=top_logprobs,
        )

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


def _listed(stop: str | list[str] | None) -> list[str]:
    return [stop] if isinstance(stop, str) else stop or []


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant", "tool", "ipython"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)

    def prompt(self, tok: Tokenizer) -> list[int]:
        return tok.encode_dialog([{"role": m.role, "content": m.text()} for m in self.messages])


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=1)
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False

    def prompts(self, tok: Tokenizer) -> list[list[int]]:
        if self.echo:
            raise HerdError("echo is not supported; leave it false")
        prompt = self.prompt
        if not prompt and not isinstance(prompt, str):
            raise HerdError("prompt is an empty list; give a string, a list of strings or a list of token ids")
        if isinstance(prompt, str):
            return [tok.encode(prompt, bos=True)]
        if prompt and all(isinstance(p, int) for p in prompt):
            return [list(prompt)]
        return [tok.encode(p, bos=True) if isinstance(p, str) else list(p) for p in prompt]


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


class ChoiceLogprobs:
    """The logprobs of one choice, in either endpoint's shape."""

    def __init__(self, tok: Tokenizer) -> None:
        self.tok = tok
        self.entries: list[dict] = []
        self.tokens: list[str] = []
        self.token_logprobs: list[float] = []
        self.top: list[dict[str, float]] = []
        self.offsets: list[int] = []

    def add(self, out: StepOutput, text_offset: int) -> None:
        if out.token_id is None or out.logprob is None:
            return
        token = self.tok.decode([out.token_id])
        top = [(self.tok.decode([i]), i, lp) for i, lp in out.top_logprobs or []]
        self.entries.append({
            "token": token, "logprob": out.logprob, "bytes": list(self.tok.token_bytes(out.token_id)),
            "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(self.tok.token_bytes(i))} for t, i, lp in top],
        })
        self.tokens.append(token)
        self.token_logprobs.append(out.logprob)
        self.top.append({t: lp for t, _, lp in top})
        self.offsets.append(text_offset)

    def chat(self) -> dict:
        return {"content": self.entries}

    def completion(self) -> dict:
        return {"tokens": self.tokens, "token_logprobs": self.token_logprobs, "top_logprobs": self.top,
                "text_offset": self.offsets}


def envelope(kind: str, request_id: str, model: str, choices: list[dict], usage_: dict | None = None) -> dict:
    """A response or stream chunk: kind is chat.completion[.chunk] or text_completion."""
    return {
        "id": request_id, "object": kind, "created": int(time.time()), "model": model, "choices": choices,
        "usage": usage_,
    }
