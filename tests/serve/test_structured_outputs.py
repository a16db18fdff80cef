"""Structured outputs: grammar-constrained decoding in the engine's batched step (herd.serve.grammar), on random
tiny models, where the grammar alone makes the output valid."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import pytest
import torch

import herd
from herd.errors import HerdError
from herd.generation import generate_tokens
from herd.serve import Engine, EngineConfig, RequestParams
from herd.serve.grammar import Grammars, mask_bias
from herd.tokenizer import Tokenizer, parse_tool_calls
from tests.tiny import make_model

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
        "ok": {"type": "boolean"},
    },
}
"""Bounded everywhere, so a random model's replies end well within max_tokens."""
STRICT_PERSON = PERSON | {"required": list(PERSON["properties"]), "additionalProperties": False}
PERSON_FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "strict": True, "schema": PERSON}}


@pytest.fixture(scope="module")
def tiny():
    return herd.load("tiny")


def run(engine: Engine, requests: dict[str, tuple[list[int], RequestParams]]) -> dict[str, tuple[list[int], str, str]]:
    """Each request's (tokens, text, finish reason), all run in one batch."""
    for request_id, (prompt, params) in requests.items():
        engine.add_request(request_id, prompt, params)
    tokens: dict[str, list[int]] = {r: [] for r in requests}
    texts = dict.fromkeys(requests, "")
    reasons: dict[str, str] = {}
    while engine.has_unfinished():
        for out in engine.step():
            tokens[out.request_id] += [] if out.token_id is None else [out.token_id]
            texts[out.request_id] += out.text
            if out.finish_reason:
                reasons[out.request_id] = out.finish_reason
    return {r: (tokens[r], texts[r], reasons[r]) for r in requests}


def test_mask_bias_reads_llguidance_bit_order():
    vocab = 70  # not a multiple of 32: the last word is cut
    bitmask = torch.randint(-(2**31), 2**31 - 1, (3, 3), dtype=torch.int32)
    bias = mask_bias(bitmask, vocab)
    expected = [[0.0 if (int(bitmask[r, i // 32]) >> (i % 32)) & 1 else float("-inf") for i in range(vocab)]
                for r in range(3)]
    assert bias.tolist() == expected


def test_constrained_and_free_requests_share_a_batch(tiny):
    """Half the batch under the schema (every reply validates, sampled, greedy, or with top-k and top-p), half free
    and greedy (the very tokens herd's generate gives)."""
    model, tok = tiny
    engine = Engine(model, tok, EngineConfig(max_running=8, block_size=8))
    grammar = engine.grammars.response_format(PERSON_FORMAT)
    prompts = [tok.encode_dialog([{"role": "user", "content": f"Person number {i}, as JSON."}]) for i in range(4)]
    sampling = [{"temperature": 1.0}, {"temperature": 1.0}, {"temperature": 0.0}, {"temperature": 0.8, "top_k": 5,
                                                                                   "top_p": 0.9}]
    requests = {f"json{i}": (p, RequestParams(max_tokens=80, seed=i, grammar=grammar, **sampling[i]))
                for i, p in enumerate(prompts)}
    requests |= {f"free{i}": (p, RequestParams(max_tokens=10)) for i, p in enumerate(prompts)}
    results = run(engine, requests)
    for i, prompt in enumerate(prompts):
        tokens, text, reason = results[f"json{i}"]
        assert reason == "stop", text
        jsonschema.validate(json.loads(text), STRICT_PERSON)
        assert text == json.dumps(json.loads(text), ensure_ascii=False)  # json.dumps layout, no stray blanks
        expected = generate_tokens(model, [prompt], max_new_tokens=10, stop_ids=tok.stop_ids)[0].tokens
        assert results[f"free{i}"][0] == expected


def test_herd_trained_bpe(tiny_tok_path):
    """A herd-trained 556-id BPE (not Meta's): replies at temperature 1 validate under the schema."""
    tok = Tokenizer(tiny_tok_path)
    engine = Engine(make_model(tok, seed=1), tok, EngineConfig(max_running=8, block_size=8))
    grammar = engine.grammars.response_format(PERSON_FORMAT)
    prompt = tok.encode("what is the sky", bos=True)
    results = run(engine, {str(i): (prompt, RequestParams(max_tokens=120, temperature=1.0, seed=i, grammar=grammar))
                           for i in range(8)})
    for _tokens, text, reason in results.values():
        assert reason == "stop", text
        jsonschema.validate(json.loads(text), STRICT_PERSON)


def test_tool_call_grammar_writes_one_call_of_the_named_function(tiny):
    model, tok = tiny
    engine = Engine(model, tok, EngineConfig(max_running=4, block_size=8))
    weather = {"type": "object", "properties": {"city": {"enum": ["Paris", "Oslo"]}, "days": {"type": "integer",
               "minimum": 1, "maximum": 7}}, "required": ["city", "days"], "additionalProperties": False}
    functions = [("get_weather", weather), ("get_time", {"type": "object", "additionalProperties": False})]
    prompt = tok.encode_dialog([{"role": "user", "content": "Weather?"}])
    for name in (None, "get_weather"):
        grammar = engine.grammars.tool_call(functions, name)
        results = run(engine, {str(i): (prompt, RequestParams(max_tokens=60, temperature=1.0, seed=i,
                                                              grammar=grammar)) for i in range(4)})
        for _tokens, text, reason in results.values():
            call = json.loads(text.removeprefix("<|python_tag|>"))  # the tag is optional, as herd's format writes it
            assert reason == "stop" and list(call) == ["type", "name", "parameters"] and call["type"] == "function"
            content, (parsed,) = parse_tool_calls(text)
            assert content == "" and (parsed.name, parsed.arguments) == (call["name"], call["parameters"])
            if name is not None or call["name"] == "get_weather":
                assert call["name"] == "get_weather"
                jsonschema.validate(call["parameters"], weather)
    with pytest.raises(HerdError, match="'get_date', which is not in tools"):
        engine.grammars.tool_call(functions, "get_date")


def test_grammars_cache_and_bad_schemas(tiny):
    _model, tok = tiny
    grammars = Grammars(tok, 128_256)
    assert grammars.response_format(PERSON_FORMAT) is grammars.response_format(json.loads(json.dumps(PERSON_FORMAT)))
    assert grammars.response_format({"type": "text"}) is None
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"properties": {"a": {"type": "frob"}}}}}
    with pytest.raises(HerdError, match=r"response_format.json_schema.schema cannot be enforced: .*frob"):
        grammars.response_format(bad)


def test_logprobs_stay_those_of_the_raw_logits(tiny):
    """A constrained request reports log p under the model's own distribution, as a free one does: at the first
    step both report the same top tokens, though the grammar makes the constrained one open an object."""
    model, tok = tiny
    engine = Engine(model, tok, EngineConfig(max_running=4, block_size=8))
    grammar = engine.grammars.response_format(PERSON_FORMAT)
    prompt = tok.encode_dialog([{"role": "user", "content": "JSON please."}])
    engine.add_request("json", prompt, RequestParams(max_tokens=4, logprobs=True, top_logprobs=3, grammar=grammar))
    engine.add_request("free", prompt, RequestParams(max_tokens=4, logprobs=True, top_logprobs=3))
    first = {out.request_id: out for out in engine.step()}
    assert tok.decode([first["json"].token_id]).startswith("{") and first["json"].token_id != first["free"].token_id
    (json_ids, json_lps), (free_ids, free_lps) = (zip(*first[r].top_logprobs, strict=True) for r in ("json", "free"))
    assert json_ids == free_ids and json_lps == pytest.approx(free_lps)
    assert first["json"].logprob < first["free"].logprob == first["free"].top_logprobs[0][1]


def test_importing_the_server_leaves_inductor_unloaded():
    """llguidance.torch torch.compiles at import, pulling in inductor (seconds, and torch's deprecation warnings on
    every command's stderr): herd.serve (imported by generate/chat/eval for the memory plan) must not."""
    code = "import sys, herd.serve.memory_plan, herd.serve.grammar; print('torch._inductor' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False", result.stderr
