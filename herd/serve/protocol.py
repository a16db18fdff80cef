"""The OpenAI API's request bodies (validated by pydantic) and the builders of its response shapes.

Covers /v1/chat/completions and /v1/completions: n, stop, max_tokens, temperature, top_p, seed, logprobs /
top_logprobs, streaming chunks and usage; `top_k` and `stop_token_ids` are accepted as extensions (as vLLM does).
Chat tools: `tools` / `tool_choice` render Llama 3.1's tool prompts, assistant `tool_calls` and `tool` messages
become Llama turns, and a reply is read for a call (`ToolReplies`, streamed the way OpenAI streams calls).
Structured outputs: `response_format` (json_object / json_schema, both endpoints, as vLLM) and tool_choice
"required" / named decode under a grammar (`SamplingFields.grammar`, herd.serve.grammar).
Limits beyond OpenAI's own: at most MAX_STOPS stop strings of at most MAX_STOP_CHARS characters each (OpenAI
takes 4), at most MAX_STOP_TOKEN_IDS stop token ids, and a seed in 0..2^64-1 (what torch's generators take).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator

from herd.errors import HerdError
from herd.serve.grammar import Grammar, Grammars
from herd.serve.request import MAX_SEED, RequestParams, StepOutput
from herd.tokenizer import Message, Tokenizer, ToolCall, Tools, parse_tool_calls, parse_tools

NonNegative = Annotated[int, Field(ge=0)]
MAX_STOPS = 16
MAX_STOP_CHARS = 256
MAX_STOP_TOKEN_IDS = 64


class StreamOptions(BaseModel):
    include_usage: bool = False


class JsonSchemaFormat(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


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
    response_format: ResponseFormat | None = None

    @field_validator("stop")
    @classmethod
    def _stop_within_limits(cls, stop: str | list[str] | None) -> str | list[str] | None:
        stops = _listed(stop)
        if len(stops) > MAX_STOPS:
            raise ValueError(f"{len(stops)} stop strings, over the limit of {MAX_STOPS}")
        if any(len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(f"a stop string is over the limit of {MAX_STOP_CHARS} characters")
        return stop

    def params(self, max_tokens: int, choice: int, logprobs: bool, top_logprobs: int,
               grammar: Grammar | None = None) -> RequestParams:
        """Engine parameters for choice `choice` (seeded choices differ from each other but are reproducible)."""
        return RequestParams(
            max_tokens=max_tokens, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
            seed=None if self.seed is None else (self.seed + choice) % (MAX_SEED + 1), stop=tuple(_listed(self.stop)),
            stop_token_ids=tuple(self.stop_token_ids or ()), logprobs=logprobs, top_logprobs=top_logprobs,
            grammar=grammar,
        )

    def grammar(self, grammars: Grammars, tools: ToolMode | None = None) -> Grammar | None:
        """The grammar the reply must follow: `response_format`'s; None for free text."""
        if self.response_format is None:
            return None
        return grammars.response_format(self.response_format.model_dump(by_alias=True))

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


def _function(tool: dict[str, Any]) -> dict[str, Any]:
    """A tool's function definition, OpenAI's {"type": "function", "function": {...}} or bare."""
    return tool["function"] if isinstance(tool.get("function"), dict) else tool


def _listed(stop: str | list[str] | None) -> list[str]:
    return [stop] if isinstance(stop, str) else stop or []


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class FunctionCall(BaseModel):
    name: str
    arguments: str
    """The arguments as a JSON object, in a string (as OpenAI sends them)."""


class MessageToolCall(BaseModel):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant", "tool", "ipython"]
    content: str | list[TextPart] | None = None
    tool_calls: list[MessageToolCall] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)

    def message(self, index: int) -> Message:
        """This message as herd's chat format takes it (a call's arguments parsed from their JSON string)."""
        if self.content is None and not self.tool_calls:
            raise HerdError(f"messages[{index}].content is missing; only an assistant message with tool_calls may "
                            "leave it out")
        message: dict[str, Any] = {"role": self.role, "content": self.text()}
        if self.tool_calls:
            message["tool_calls"] = [_call(call, f"messages[{index}].tool_calls[{j}]")
                                     for j, call in enumerate(self.tool_calls)]
        return message


def _call(call: MessageToolCall, where: str) -> dict[str, Any]:
    try:
        arguments = json.loads(call.function.arguments)
    except json.JSONDecodeError:
        arguments = None
    if not isinstance(arguments, dict):
        raise HerdError(f"{where}.function.arguments must be a JSON object in a string, got "
                        f"{call.function.arguments!r:.60}")
    return {"name": call.function.name, "arguments": arguments, "call_id": call.id or ""}


class NamedFunction(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: NamedFunction


@dataclass(frozen=True)
class ToolMode:
    """A request's tools once read: what the prompt offers and what the reply must do."""

    tools: Tools
    choice: Literal["auto", "required", "named"]
    forced: str | None = None
    """The function a named tool_choice forces."""


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    """Accepted; a Llama 3.1 reply holds at most one call."""

    def dialog(self) -> list[Message]:
        return [m.message(i) for i, m in enumerate(self.messages)]

    def tool_mode(self) -> ToolMode | None:
        """None when the prompt offers no tools (no tools, or tool_choice "none"); HerdError on bad tools."""
        if not self.tools:
            if self.tool_choice not in (None, "none", "auto"):
                raise HerdError("tool_choice requires a tool call but the request has no tools; add tools")
            return None
        tools = parse_tools(self.tools, "tools")
        if self.tool_choice == "none":
            return None
        if isinstance(self.tool_choice, NamedToolChoice):
            name = self.tool_choice.function.name
            if name not in {tool.name for tool in tools.custom}:
                raise HerdError(f"tool_choice.function.name {name!r} is not one of the tools")
            return ToolMode(tools, "named", name)
        return ToolMode(tools, self.tool_choice or "auto")

    def grammar(self, grammars: Grammars, tools: ToolMode | None = None) -> Grammar | None:
        """A call of the custom tools when tool_choice is "required" or names one (it takes precedence), else
        `response_format`'s grammar."""
        if tools is None or tools.choice == "auto" or not tools.tools.custom:
            return super().grammar(grammars)
        custom = {tool.name for tool in tools.tools.custom}
        functions = [(f["name"], f.get("parameters")) for f in map(_function, self.tools or [])
                     if f.get("name") in custom]
        return grammars.tool_call(functions, tools.forced)

    def prompt(self, tok: Tokenizer, tools: ToolMode | None) -> list[int]:
        """The prompt's ids; `tools` is `tool_mode()`'s answer."""
        return tok.encode_dialog(self.dialog(), tools=None if tools is None else tools.tools)


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


def tool_calls_body(calls: list[ToolCall]) -> list[dict]:
    """Calls in OpenAI's message shape (arguments as a JSON string)."""
    return [{"id": call.call_id, "type": "function",
             "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)}}
            for call in calls]


def read_reply(text: str, mode: ToolMode) -> tuple[str, list[ToolCall]]:
    """A finished reply -> (content, calls); HerdError when tool_choice demanded a call the reply lacks.

    A call of a tool the request does not offer (say code after `<|python_tag|>` with only functions offered) is
    no call: the reply comes back as its text. Text before a call's `<|python_tag|>` or `<function=` is the
    content beside the call, as OpenAI returns both (parse_tool_calls, as Meta's parser, drops it)."""
    content, calls = parse_tool_calls(text)
    offered = {tool.name for tool in mode.tools.custom} | set(mode.tools.builtin)
    if any(call.name not in offered for call in calls):
        content, calls = text, []
    elif calls:
        content = text[: _first_opening(text) or 0].strip()
    if mode.choice == "required" and not calls:
        raise HerdError("tool_choice is 'required' but the model's reply holds no tool call")
    if mode.forced is not None and [call.name for call in calls] != [mode.forced]:
        raise HerdError(f"tool_choice names {mode.forced!r} but the model's reply does not call it")
    return content, calls


# A reply that starts like one of these may be a call: held back while streaming until it is decided.
_CALL_OPENINGS = ("<|python_tag|>", "<function=", "{", "[")
_CALL_WORD = re.compile(r"\w*(\.(c(a(l(l(\(.*)?)?)?)?)?)?", re.S)


# Where a call may begin after some text (parse_tool_calls finds these anywhere in a reply).
_LATER_OPENINGS = ("<|python_tag|>", "<function=")


def _first_opening(text: str) -> int | None:
    """Where the first `<|python_tag|>` or `<function=` in `text` is; None without one."""
    found = [i for i in (text.find(opening) for opening in _LATER_OPENINGS) if i >= 0]
    return min(found) if found else None


def call_opening(text: str) -> int:
    """Where in `text` (reply text after its start) a tool call may begin: the first `<|python_tag|>` or
    `<function=`, else a tail that may still grow into one; len(text) when there is neither."""
    found = _first_opening(text)
    if found is not None:
        return found
    longest = max(map(len, _LATER_OPENINGS))
    for start in range(max(len(text) - longest + 1, 0), len(text)):
        if any(opening.startswith(text[start:]) for opening in _LATER_OPENINGS):
            return start
    return len(text)


def may_be_call(text: str) -> bool:
    """Whether a reply starting with `text` may still turn out to be a tool call."""
    start = text.lstrip()
    return (start.startswith(_CALL_OPENINGS) or any(opening.startswith(start) for opening in _CALL_OPENINGS)
            or _CALL_WORD.fullmatch(start) is not None)


class ToolReplies:
    """One streamed choice of a request with tools: text is passed on as content once the reply cannot be a call;
    until then it is held, and at the end a call is sent as OpenAI streams one (id and name, then the arguments
    in pieces). A reply that starts as text may call a tool after it (`Let me look. <function=f>{...}</function>`):
    from a `<|python_tag|>` or `<function=` on (or a tail that may grow into one) the text is held again, and the
    whole reply read at the end, so the text comes as content deltas and then the call's deltas, as OpenAI
    streams a reply with both."""

    ARGUMENT_PIECE = 16

    def __init__(self, mode: ToolMode) -> None:
        self.mode = mode
        self.text = ""
        """The reply so far."""
        self.sent = 0
        """How much of it has gone out as content."""
        self.is_content = False

    def push(self, text: str) -> str:
        """New text -> the content to send now."""
        self.text += text
        if not self.is_content:
            if may_be_call(self.text):
                return ""
            self.is_content = True
        end = self.sent + call_opening(self.text[self.sent :])
        piece, self.sent = self.text[self.sent : end], end
        return piece

    def finish(self) -> tuple[str, list[dict]]:
        """End of the reply -> (content still to send, tool-call deltas to send)."""
        content, calls = read_reply(self.text, self.mode)
        if self.is_content:  # the content sent stays sent; what was held goes out unless it is the call
            content = "" if calls else self.text[self.sent :]
        deltas = []
        for index, call in enumerate(tool_calls_body(calls)):
            function = call["function"]
            deltas.append({"index": index, "id": call["id"], "type": "function",
                           "function": {"name": function["name"], "arguments": ""}})
            arguments = function["arguments"]
            deltas += [{"index": index, "function": {"arguments": arguments[i : i + self.ARGUMENT_PIECE]}}
                       for i in range(0, len(arguments), self.ARGUMENT_PIECE)]
        return content, deltas
