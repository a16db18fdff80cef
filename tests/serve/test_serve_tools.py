"""OpenAI tools in `herd serve`, driven by the official `openai` client: tool_calls replies (streamed and not),
tool results round trip, tool_choice variants and 400s for bad tools.

A random model never calls a tool, so the live tests serve a tiny model fitted for a few dozen steps to two
replies under the same tools: a get_weather call for "Weather in Paris?" and "Hello!" for "Hi"; another one is
fitted to text then a `<function=...>` call for "Weather in Rome?".
"""

from __future__ import annotations

import datetime
import json

import pytest
import torch
import torch.nn.functional as F

from herd.errors import HerdError
from herd.model import build_model
from herd.serve.protocol import ChatCompletionRequest, ToolReplies, may_be_call, read_reply
from herd.tokenizer import Tokenizer, custom_tools_prompt, parse_tools, system_prompt, tool_call_text
from herd.tokenizer.train_bpe import train_tokenizer
from tests.tiny import model_config

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")

from herd.serve import EngineConfig  # noqa: E402
from herd.serve.server import create_app  # noqa: E402
from tests.live_server import live_server  # noqa: E402

MODEL = "tools"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                   "required": ["city"]}}}
CLOCK = {"type": "function", "function": {"name": "get_time", "description": "Time now"}}
TOOLS = [WEATHER, CLOCK]
CALL = {"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}
ASK = [{"role": "user", "content": "Weather in Paris?"}]
HI = [{"role": "user", "content": "Hi"}]
ROME = [{"role": "user", "content": "Weather in Rome?"}]
LOOK = 'Let me look. <function=get_weather>{"city": "Rome"}</function>'


def fitted_model(tok: Tokenizer, steps: int = 60, dialogs: list | None = None):
    """A 2-layer model fitted to `dialogs` under TOOLS, by default: call get_weather after ASK, answer "Hello!"
    after HI."""
    dialogs = dialogs or [[*ASK, {"role": "assistant", "content": "", "tool_calls": [CALL]}],
                          [*HI, {"role": "assistant", "content": "Hello!"}]]
    rows = [tok.encode_dialog_with_mask(d, tools=TOOLS) for d in dialogs]
    ids = torch.tensor([sum((r[0] for r in rows), [])])
    mask = torch.tensor(sum((r[1] for r in rows), []), dtype=torch.bool)[1:]
    docs = torch.tensor([sum(([i] * len(r[0]) for i, r in enumerate(rows)), [])])
    torch.manual_seed(0)
    model = build_model(model_config(vocab_size=tok.n_words, max_seq_len=1024))
    model.init_weights(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        logits = model(ids[:, :-1], doc_ids=docs[:, :-1])[0]
        loss = F.cross_entropy(logits[mask], ids[0, 1:][mask])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tools = parse_tools(TOOLS)
    words = [system_prompt(tools), custom_tools_prompt(tools.custom), tool_call_text(CALL), "Weather in Paris? Hi "
             "Hello! user assistant ipython system"]
    tok = Tokenizer(train_tokenizer(words * 20, 480, tmp_path_factory.mktemp("tools") / "tok.model",
                                    show_progress=False))
    app = create_app(fitted_model(tok), tok, model_name=MODEL, engine_config=EngineConfig(max_running=4))
    with live_server(app) as url:
        yield {"url": url, "tok": tok}


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server["url"] + "/v1", api_key="none", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def rome_client(tmp_path_factory):
    """A client of a model fitted to answer ROME with LOOK: text, then a `<function=...>` call."""
    tools = parse_tools(TOOLS)
    words = [system_prompt(tools), custom_tools_prompt(tools.custom), ROME[0]["content"], LOOK, "user assistant"]
    tok = Tokenizer(train_tokenizer(words * 20, 400, tmp_path_factory.mktemp("rome") / "tok.model",
                                    show_progress=False))
    model = fitted_model(tok, dialogs=[[*ROME, {"role": "assistant", "content": LOOK}]])
    with live_server(create_app(model, tok, model_name=MODEL, engine_config=EngineConfig(max_running=4))) as url:
        yield openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)


def streamed(client, **kwargs) -> tuple[str, list, list]:
    """(content, tool-call deltas, finish reasons) of a streamed chat completion."""
    chunks = list(client.chat.completions.create(model=MODEL, temperature=0, stream=True, **kwargs))
    assert all(len(c.choices[0].delta.tool_calls or []) <= 1 for c in chunks)  # one call delta a chunk, as OpenAI
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    deltas = [d for c in chunks for d in c.choices[0].delta.tool_calls or []]
    return content, deltas, [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason]


@pytest.mark.slow
def test_tool_call_reply(client):
    for choice in ({}, {"tool_choice": "auto"}, {"tool_choice": "required"},
                   {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}):
        response = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, temperature=0, **choice)
        reply = response.choices[0]
        assert reply.finish_reason == "tool_calls" and reply.message.content is None
        (call,) = reply.message.tool_calls
        assert call.type == "function" and call.id.startswith("call_") and call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == {"city": "Paris", "days": 3}


@pytest.mark.slow
def test_streamed_tool_call_comes_as_openai_deltas(client):
    content, deltas, reasons = streamed(client, messages=ASK, tools=TOOLS)
    assert content == "" and reasons == ["tool_calls"]
    first, *rest = deltas
    assert first.index == 0 and first.id.startswith("call_") and first.function.name == "get_weather"
    assert first.function.arguments == "" and len(rest) > 1
    assert all(d.index == 0 and d.id is None and d.function.name is None for d in rest)
    assert json.loads("".join(d.function.arguments for d in rest)) == {"city": "Paris", "days": 3}


@pytest.mark.slow
def test_text_then_call_streams_content_then_call_deltas(rome_client):
    client = rome_client
    response = client.chat.completions.create(model=MODEL, messages=ROME, tools=TOOLS, temperature=0)
    reply = response.choices[0]
    assert reply.finish_reason == "tool_calls" and reply.message.content == "Let me look."
    assert [(c.function.name, json.loads(c.function.arguments)) for c in reply.message.tool_calls] == [
        ("get_weather", {"city": "Rome"})]
    chunks = list(client.chat.completions.create(model=MODEL, messages=ROME, tools=TOOLS, temperature=0, stream=True))
    kinds = [("call" if c.choices[0].delta.tool_calls else "text") for c in chunks if c.choices[0].delta.content or
             c.choices[0].delta.tool_calls]
    assert kinds == sorted(kinds, reverse=True) and "text" in kinds and "call" in kinds  # text deltas, then calls
    content, deltas, reasons = streamed(client, messages=ROME, tools=TOOLS)
    assert content == "Let me look. " and reasons == ["tool_calls"]
    assert deltas[0].function.name == "get_weather" and deltas[0].id.startswith("call_")
    assert json.loads("".join(d.function.arguments for d in deltas[1:])) == {"city": "Rome"}


@pytest.mark.slow
def test_plain_reply_with_tools_is_content(client):
    response = client.chat.completions.create(model=MODEL, messages=HI, tools=TOOLS, temperature=0)
    assert response.choices[0].message.content == "Hello!"
    assert response.choices[0].message.tool_calls is None and response.choices[0].finish_reason == "stop"
    assert streamed(client, messages=HI, tools=TOOLS) == ("Hello!", [], ["stop"])


@pytest.mark.slow
def test_tool_choice_none_leaves_tools_out(server, client):
    response = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="none",
                                              temperature=0, max_tokens=8)
    assert response.usage.prompt_tokens == len(server["tok"].encode_dialog(ASK))
    assert response.choices[0].message.tool_calls is None and response.choices[0].finish_reason != "tool_calls"


@pytest.mark.slow
def test_tool_result_round_trip(server, client):
    """The client sends the call back with its result; the prompt holds both as Llama turns."""
    call = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, temperature=0)
    message = call.choices[0].message
    follow_up = [*ASK, message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": '{"sky": "sunny"}'}]
    response = client.chat.completions.create(model=MODEL, messages=follow_up, tools=TOOLS, temperature=0,
                                              max_tokens=8)
    dialog = [*ASK, {"role": "assistant", "content": "", "tool_calls": [CALL]},
              {"role": "tool", "content": '{"sky": "sunny"}'}]
    assert response.usage.prompt_tokens == len(server["tok"].encode_dialog(dialog, tools=TOOLS))


@pytest.mark.slow
def test_bad_tools_get_400_naming_the_field(client):
    chat = client.chat.completions
    with pytest.raises(openai.BadRequestError, match=r"tools\[1\]\.function\.name"):
        chat.create(model=MODEL, messages=ASK, tools=[WEATHER, {"type": "function", "function": {"name": "a b"}}])
    with pytest.raises(openai.BadRequestError, match=r"tools\[0\]\.function\.parameters\.required"):
        chat.create(model=MODEL, messages=ASK, tools=[{"type": "function", "function": {
            "name": "f", "parameters": {"type": "object", "properties": {}, "required": ["x"]}}}])
    with pytest.raises(openai.BadRequestError, match="tool_choice.function.name 'nope'"):
        chat.create(model=MODEL, messages=ASK, tools=TOOLS,
                    tool_choice={"type": "function", "function": {"name": "nope"}})
    with pytest.raises(openai.BadRequestError, match="has no tools"):
        chat.create(model=MODEL, messages=ASK, tool_choice="required")
    bad_call = {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                                                     "function": {"name": "get_weather", "arguments": "[1]"}}]}
    with pytest.raises(openai.BadRequestError, match=r"messages\[1\]\.tool_calls\[0\]\.function\.arguments"):
        chat.create(model=MODEL, messages=[*ASK, bad_call], tools=TOOLS)
    # The grammar forces the named call, though the model was fitted to call get_weather.
    reply = chat.create(model=MODEL, messages=ASK, tools=TOOLS, temperature=0,
                        tool_choice={"type": "function", "function": {"name": "get_time"}}).choices[0]
    assert reply.finish_reason == "tool_calls" and reply.message.tool_calls[0].function.name == "get_time"


def test_request_renders_calls_and_results_as_llama_turns(meta_tokenizer):
    body = ChatCompletionRequest.model_validate({"model": "m", "tools": TOOLS, "messages": [
        {"role": "system", "content": "Be brief."}, *ASK,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": json.dumps(
                CALL["arguments"])}}]},
        {"role": "tool", "tool_call_id": "call_9", "content": [{"type": "text", "text": "sunny"}]}]})
    dialog = [{"role": "system", "content": "Be brief."}, *ASK,
              {"role": "assistant", "content": "", "tool_calls": [CALL]}, {"role": "ipython", "content": "sunny"}]
    mode = body.tool_mode()
    assert (mode.choice, mode.forced) == ("auto", None)
    assert body.prompt(meta_tokenizer, mode) == meta_tokenizer.encode_dialog(dialog, tools=TOOLS)
    text = meta_tokenizer.decode(body.prompt(meta_tokenizer, mode))
    assert ("<|start_header_id|>assistant<|end_header_id|>\n\n<|python_tag|>{\"type\": \"function\", \"name\": "
            "\"get_weather\", \"parameters\": {\"city\": \"Paris\", \"days\": 3}}<|eom_id|>"
            "<|start_header_id|>ipython<|end_header_id|>\n\nsunny<|eot_id|>") in text
    assert f"Today Date: {datetime.date.today().strftime('%d %B %Y')}\n\nBe brief.\n<|eot_id|>" in text
    none = body.model_copy(update={"tool_choice": "none"})
    assert none.tool_mode() is None
    with pytest.raises(HerdError, match="messages\\[0\\].content is missing"):
        ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user"}]}).dialog()


@pytest.mark.parametrize("text, may", [
    ("", True), ("  ", True), ("<|python", True), ("<|python_tag|>print(1)", True), ("<func", True),
    ('{"name"', True), ("[f(x=1)]", True), ("brave_search", True), ("brave_search.ca", True),
    ('brave_search.call(query="x")', True), ("Hello", True), ("Hello!", False), ("Hello there", False),
    ("<b>", False), ("12 + 3", False),
])
def test_may_be_call(text, may):
    assert may_be_call(text) is may


def test_streamed_replies_hold_back_only_possible_calls():
    mode = ChatCompletionRequest.model_validate({"model": "m", "messages": ASK, "tools": TOOLS}).tool_mode()
    plain = ToolReplies(mode)
    assert [plain.push(t) for t in ["Hel", "lo", " there", "!"]] == ["", "", "Hello there", "!"]
    assert plain.finish() == ("", [])
    call = ToolReplies(mode)
    pieces = ["<|python_tag|>", '{"type": "function", "name": "get_time", ', '"parameters": {}}']
    assert [call.push(t) for t in pieces] == ["", "", ""]
    content, deltas = call.finish()
    assert content == "" and deltas[0]["function"] == {"name": "get_time", "arguments": ""}
    assert "".join(d["function"]["arguments"] for d in deltas[1:]) == "{}"
    required = ChatCompletionRequest.model_validate({"model": "m", "messages": ASK, "tools": TOOLS,
                                                     "tool_choice": "required"}).tool_mode()
    late = ToolReplies(required)
    assert late.push("No call here.") == "No call here."
    with pytest.raises(HerdError, match="'required'"):
        late.finish()


def test_streamed_text_then_call_holds_the_call_back():
    mode = ChatCompletionRequest.model_validate({"model": "m", "messages": ASK, "tools": TOOLS}).tool_mode()
    reply = ToolReplies(mode)
    pieces = ["Let me", " look. ", "<func", "tion=get_weather>", '{"city": "Rome"}', "</function>"]
    assert [reply.push(t) for t in pieces] == ["Let me", " look. ", "", "", "", ""]
    content, deltas = reply.finish()
    assert content == "" and deltas[0]["function"] == {"name": "get_weather", "arguments": ""}
    assert json.loads("".join(d["function"]["arguments"] for d in deltas[1:])) == {"city": "Rome"}
    assert read_reply("".join(pieces), mode)[0] == "Let me look."
    tags = ToolReplies(mode)  # text that only looks like an opening goes out once it cannot be one
    assert [tags.push(t) for t in ["Use a ", "<", "b> tag or <function=x> in HTML."]] == [
        "Use a ", "", "<b> tag or "]
    assert tags.finish() == ("<function=x> in HTML.", [])


def test_calls_of_tools_not_offered_stay_text():
    mode = ChatCompletionRequest.model_validate({"model": "m", "messages": ASK, "tools": TOOLS}).tool_mode()
    for reply in ["<|python_tag|>print(1)", 'I will search.call(query="x")', '{"name": "get_date", "parameters": {}}']:
        assert read_reply(reply, mode) == (reply, [])
    content, (call,) = read_reply('{"name": "get_time", "parameters": {}}', mode)
    assert content == "" and (call.name, call.arguments) == ("get_time", {})
