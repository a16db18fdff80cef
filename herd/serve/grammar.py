"""Structured outputs: grammars for OpenAI's `response_format` and forced tool calls, and the token masks they put
on the engine's logits.

llguidance (the grammar engine vLLM and SGLang use) compiles JSON schemas and walks each sequence's output token
by token; `Grammars` builds its tokenizer once from herd's `Tokenizer` (any BPE: Meta's 128K or herd-trained)
and caches compiled grammars by key. Every constrained sequence gets its own matcher (`Grammar.matcher`).
JSON is written compactly as `json.dumps` does (", " and ": ", no other whitespace), so a grammar fixes all the
layout and a model cannot run on in blanks. The bitmask becomes an additive bias (0 or -inf) through a byte lookup
table (`mask_bias`) rather than llguidance.torch's apply function, which torch.compiles its kernel (a stall on the
first constrained step; importing llguidance.torch alone imports inductor, seconds for every herd command that
plans memory, so the bitmasks come from llguidance.numpy); on a CPU the lookup plus an add takes ~0.1 ms for 4 rows
of 128K ids, where unpacking with tensor shifts and `masked_fill` took ~2-3 ms (one thread).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch
from llguidance import LLMatcher, LLTokenizer, TokenizerWrapper
from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask

from herd.errors import HerdError
from herd.tokenizer import Tokenizer

_BYTE_BIAS = np.where((np.arange(256)[:, None] >> np.arange(8)) & 1, np.float32(0), np.float32(-np.inf))
"""[256, 8]: the bias of the 8 ids one bitmask byte covers, lowest bit first."""
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
CACHE_SIZE = 128
"""Compiled grammars kept (least recently used dropped first)."""


class Grammar:
    """A compiled grammar; `matcher()` starts a fresh walk through it for one sequence."""

    def __init__(self, template: LLMatcher) -> None:
        self._template = template

    def matcher(self) -> LLMatcher:
        return self._template.deep_copy()


class _Vocabulary:
    """herd's tokenizer as llguidance's TokenizerWrapper reads it: each id's bytes (ids past the tokenizer,
    a model's padding, have none), the special ids, and an encode function."""

    def __init__(self, tok: Tokenizer, vocab_size: int) -> None:
        self.tok = tok
        self.tokens = [tok.token_bytes(i) if i < tok.n_words else b"" for i in range(vocab_size)]
        self.eos_token_id = tok.eot_id
        self.bos_token_id = tok.bos_id
        self.special_token_ids = sorted(tok.special_tokens.values())

    def __call__(self, text: str) -> list[int]:
        return self.tok.encode(text)


class Grammars:
    """Compiles and caches the grammars of one model's vocabulary (thread-safe; the tokenizer is built on first
    use, about half a second for 128K ids). The tokenizer's stop tokens are allowed only where a grammar accepts."""

    def __init__(self, tok: Tokenizer, vocab_size: int) -> None:
        self.tok, self.vocab_size = tok, vocab_size
        self._lltok: LLTokenizer | None = None
        self._cache: OrderedDict[str, Grammar] = OrderedDict()
        self._lock = threading.Lock()

    def response_format(self, response_format: dict | None) -> Grammar | None:
        """The grammar of an OpenAI `response_format` dict ({"type": "text" | "json_object" | "json_schema", ...});
        None for plain text."""
        kind = (response_format or {}).get("type", "text")
        if kind == "text":
            return None
        if kind == "json_object":
            return self.json_schema({"type": "object"}, "response_format")
        if kind != "json_schema":
            raise HerdError(f"response_format.type {kind!r} is unknown; use 'text', 'json_object' or 'json_schema'")
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise HerdError("response_format.json_schema must be an object with a 'schema' object in it")
        schema = spec.get("schema") or {}
        if spec.get("strict"):
            schema = _strict(schema)
        return self.json_schema(schema, "response_format.json_schema.schema")

    def tool_call(self, functions: Sequence[tuple[str, dict | None]], name: str | None = None) -> Grammar:
        """A Llama 3.1 JSON custom tool call as herd's chat format writes it, `<|python_tag|>` (optional) then
        `{"type": "function", "name": ..., "parameters": {...}}`, of one of `functions` ((name, parameters schema)
        pairs), or of the function `name` only."""
        chosen = [(n, p) for n, p in functions if name is None or n == name]
        if not chosen:
            known = ", ".join(n for n, _ in functions) or "none"
            raise HerdError(f"tool_choice names the function {name!r}, which is not in tools (given: {known})")
        calls = [
            {"type": "object", "additionalProperties": False, "required": ["type", "name", "parameters"],
             "properties": {"type": {"const": "function"}, "name": {"const": n}, "parameters": p or {"type": "object"}}}
            for n, p in chosen
        ]
        schema = (calls[0] if len(calls) == 1 else {"anyOf": calls}) | {"x-guidance": JSON_OPTIONS}
        lark = f"start: <|python_tag|>? call\ncall: %json {json.dumps(schema)}"
        return self._compile(lark, "tools.function.parameters", lambda: LLMatcher.grammar_from_lark(lark))

    def json_schema(self, schema: dict, field: str) -> Grammar:
        """The grammar of JSON documents valid under `schema`; a schema llguidance cannot enforce is a HerdError
        naming `field`."""
        return self._compile(json.dumps(schema, sort_keys=True), field,
                             lambda: LLMatcher.grammar_from_json_schema(schema, defaults=JSON_OPTIONS))

    def _compile(self, key: str, field: str, source: Callable[[], str]) -> Grammar:
        """The cached grammar under `key`, else `source()` compiled (errors name `field`)."""
        with self._lock:
            grammar = self._cache.get(key)
            if grammar is not None:
                self._cache.move_to_end(key)
                return grammar
            lltok = self._tokenizer()
        try:
            text = source()
        except ValueError as error:
            raise HerdError(f"{field} is not a JSON schema: {error}") from None
        template = LLMatcher(lltok, text, log_level=0)
        if template.is_error():
            raise HerdError(f"{field} cannot be enforced: {template.get_error()}; fix or simplify the schema")
        grammar = Grammar(template)
        with self._lock:
            self._cache[key] = grammar
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return grammar

    def _tokenizer(self) -> LLTokenizer:
        if self._lltok is None:
            wrapper = TokenizerWrapper(_Vocabulary(self.tok, self.vocab_size))
            self._lltok = LLTokenizer(wrapper, n_vocab=self.vocab_size, eos_token=sorted(self.tok.stop_ids))
        return self._lltok


def _strict(schema: dict) -> dict:
    """OpenAI's strict mode: every object schema lists all its properties as required and allows no others."""
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict_children(key, value) for key, value in schema.items()}
    if out.get("type") == "object" or "properties" in out:
        out.setdefault("additionalProperties", False)
        out.setdefault("required", list(out.get("properties", {})))
    return out


def _strict_children(key: str, value: object) -> object:
    if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
        return {name: _strict(sub) for name, sub in value.items()}
    if key in ("items", "additionalProperties", "not") and isinstance(value, dict):
        return _strict(value)
    if key in ("anyOf", "oneOf", "allOf", "prefixItems") and isinstance(value, list):
        return [_strict(sub) for sub in value]
    return value


class Masker:
    """Fills the token bitmasks of a step's constrained sequences and applies them to the logits.

    The masks of the next step are filled ahead (`prefetch`), on a thread of their own while the model runs that
    step (llguidance drops the GIL), so a step waits for them only as long as they outlast the forward pass. They
    are filled one after another: llguidance's parallel executor (fill_next_token_bitmask_par) took ~9 ms a step
    for 4 sequences on a busy 2-core machine, in thread wake-ups, against ~1 ms one by one."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="herd-grammar")
        self._ahead: tuple[dict[LLMatcher, int], Future | None] = ({}, None)

    def prefetch(self, matchers: list[LLMatcher]) -> None:
        """Start filling the next masks of `matchers` (which take no token before the next `mask_`)."""
        self._ahead = ({m: i for i, m in enumerate(matchers)}, self._pool.submit(self._fill, matchers))

    @torch.inference_mode()  # the model's logits are inference tensors
    def mask_(self, logits: torch.Tensor, rows: list[int], matchers: list[LLMatcher]) -> None:
        """Set to -inf, in place, the logits [B, vocab] of the tokens that `matchers` forbid in their `rows`."""
        (index, future), self._ahead = self._ahead, ({}, None)
        ahead = None if future is None else future.result()
        missing = [m for m in matchers if m not in index]
        fresh = dict(zip(missing, self._fill(missing), strict=True))
        bitmask = torch.stack([ahead[index[m]] if m in index else fresh[m] for m in matchers])
        bias = mask_bias(bitmask, logits.shape[-1]).to(logits.device, logits.dtype, non_blocking=True)
        logits.index_add_(0, torch.tensor(rows, device=logits.device), bias)

    def _fill(self, matchers: list[LLMatcher]) -> torch.Tensor:
        bitmask = allocate_token_bitmask(len(matchers), self.vocab_size)
        for i, matcher in enumerate(matchers):
            fill_next_token_bitmask(matcher, bitmask, i)
        return torch.from_numpy(bitmask)


def mask_bias(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """0 for allowed ids, -inf for the others, [B, vocab_size], from llguidance's int32 bitmask [B, ceil(vocab /
    32)] (bit j of word w: id 32w+j; little-endian words, so byte k of the row covers ids 8k..8k+7)."""
    bias = np.take(_BYTE_BIAS, bitmask.numpy().view(np.uint8), axis=0)
    return torch.from_numpy(bias.reshape(len(bias), -1)[:, :vocab_size])
