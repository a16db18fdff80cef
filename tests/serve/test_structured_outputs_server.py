"""Structured outputs through the OpenAI API: the `openai` client against a live server on a random tiny model
(Meta's 128K vocabulary), where only the grammar makes the replies JSON."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import pytest

import herd

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")

from herd.serve import EngineConfig
from herd.serve.server import create_app
from tests.live_server import live_server
from tests.serve.test_structured_outputs import PERSON_FORMAT, STRICT_PERSON

MODEL = "tiny"
ASK = [{"role": "user", "content": "Describe a person as JSON."}]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client():
    model, tok = herd.load("tiny")
    app = create_app(model, tok, model_name=MODEL, engine_config=EngineConfig(max_running=16, block_size=16))
    with live_server(app) as url:
        yield openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=120)


def streamed_texts(client, **kwargs) -> tuple[list[str], list[str]]:
    """Every choice's joined text and finish reason of a streamed chat completion."""
    texts: dict[int, str] = {}
    reasons: dict[int, str] = {}
    for chunk in client.chat.completions.create(model=MODEL, messages=ASK, stream=True, **kwargs):
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                reasons[choice.index] = choice.finish_reason
    return [texts[i] for i in sorted(texts)], [reasons[i] for i in sorted(texts)]


def test_json_schema_replies_validate_at_temperature_1(client):
    """60 sampled replies (30 streamed), every one valid under the schema."""
    replies = []
    for seed in range(3):
        response = client.chat.completions.create(model=MODEL, messages=ASK, n=10, temperature=1, seed=10 * seed,
                                                  max_tokens=80, response_format=PERSON_FORMAT)
        replies += [(c.message.content, c.finish_reason) for c in response.choices]
        texts, reasons = streamed_texts(client, n=10, temperature=1, seed=100 + 10 * seed, max_tokens=80,
                                        response_format=PERSON_FORMAT)
        replies += list(zip(texts, reasons, strict=True))
    assert len(replies) == 60 and len({text for text, _ in replies}) > 50  # seeds 0..29 and 100..129
    for text, reason in replies:
        assert reason == "stop", text
        jsonschema.validate(json.loads(text), STRICT_PERSON)


def test_json_object_replies_parse_at_temperature_1(client):
    """50 sampled json_object replies: each one that ends is a JSON object. A random model writes strings of
    random tokens that seldom close, so some run to max_tokens; those stop inside the object, never outside it."""
    ended = 0
    for seed in range(5):
        response = client.chat.completions.create(model=MODEL, messages=ASK, n=10, temperature=1, seed=10 * seed,
                                                  max_tokens=64, response_format={"type": "json_object"})
        for choice in response.choices:
            text = choice.message.content
            assert text.startswith("{")
            if choice.finish_reason == "stop":
                assert isinstance(json.loads(text), dict)
                ended += 1
            else:
                assert choice.finish_reason == "length"
    assert ended >= 10


def test_constrained_and_free_requests_at_once(client):
    """Concurrent requests, half constrained: the free greedy replies are those the server gives alone."""
    free = {"messages": [{"role": "user", "content": "Hello there!"}], "temperature": 0, "max_tokens": 12}
    alone = client.chat.completions.create(model=MODEL, **free).choices[0].message.content

    def constrained(seed: int) -> str:
        return client.chat.completions.create(model=MODEL, messages=ASK, temperature=1, seed=seed, max_tokens=80,
                                              response_format=PERSON_FORMAT).choices[0].message.content

    with ThreadPoolExecutor(8) as pool:
        jsons = [pool.submit(constrained, seed) for seed in range(4)]
        frees = [pool.submit(lambda: client.chat.completions.create(model=MODEL, **free)) for _ in range(4)]
        for future in jsons:
            jsonschema.validate(json.loads(future.result()), STRICT_PERSON)
        assert [f.result().choices[0].message.content for f in frees] == [alone] * 4


def test_bad_response_format_gets_400_naming_the_field(client):
    chat = client.chat.completions
    bad_schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "frobnicate"}}}
    with pytest.raises(openai.BadRequestError, match="response_format.json_schema.schema cannot be enforced"):
        chat.create(model=MODEL, messages=ASK, response_format=bad_schema)
    with pytest.raises(openai.BadRequestError, match="response_format.type"):
        chat.create(model=MODEL, messages=ASK, response_format={"type": "xml"})
    with pytest.raises(openai.BadRequestError, match="response_format.json_schema"):
        chat.create(model=MODEL, messages=ASK, response_format={"type": "json_schema"})


def test_completions_take_response_format_too(client):
    """/v1/completions accepts response_format as an extension, as vLLM does."""
    response = client.completions.create(model=MODEL, prompt="A person:", n=4, temperature=1, seed=7, max_tokens=80,
                                         extra_body={"response_format": PERSON_FORMAT})
    for choice in response.choices:
        assert choice.finish_reason == "stop", choice.text
        jsonschema.validate(json.loads(choice.text), STRICT_PERSON)


WEATHER = {"type": "object", "properties": {"city": {"enum": ["Paris", "Oslo"]}, "days": {"type": "integer",
           "minimum": 1, "maximum": 7}}, "required": ["city", "days"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
         {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {
             "zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"], "additionalProperties": False}}}]


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_forced_tool_calls_from_a_random_model(client, tool_choice):
    """tool_choice required / named: the grammar makes even a random model call a tool, with valid arguments."""
    response = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice=tool_choice, n=8,
                                              temperature=1, seed=3, max_tokens=60)
    calls = []
    for choice in response.choices:
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        calls += [(call.function.name, call.function.arguments) for call in choice.message.tool_calls]
    chunks = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice=tool_choice,
                                            temperature=1, seed=4, max_tokens=60, stream=True)
    deltas = [d for chunk in chunks for c in chunk.choices for d in c.delta.tool_calls or []]
    calls.append((deltas[0].function.name, "".join(d.function.arguments for d in deltas)))
    assert len(calls) == 9
    for name, arguments in calls:
        if isinstance(tool_choice, dict) or name == "get_weather":
            assert name == "get_weather"
            jsonschema.validate(json.loads(arguments), WEATHER)
        else:
            assert name == "get_time" and json.loads(arguments)["zone"] in ("UTC", "CET")
