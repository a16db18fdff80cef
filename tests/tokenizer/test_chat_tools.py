"""Llama 3.1 tool use in herd's chat format against Meta's reference (llama_models): the tool prompts byte for
byte against its prompt_format.md, dialog ids against its ChatFormat, reply parsing against its
decode_assistant_message, the SFT mask of tool turns, and the errors of bad tools or calls."""

import datetime
import random
import re
from importlib import resources

import pytest

ref_chat_format = pytest.importorskip("llama_models.llama3.chat_format")
ref_tokenizer = pytest.importorskip("llama_models.llama3.tokenizer")
from llama_models.datatypes import BuiltinTool, RawMessage, StopReason  # noqa: E402
from llama_models.datatypes import ToolCall as RefToolCall  # noqa: E402

from herd.errors import HerdError  # noqa: E402
from herd.tokenizer import (  # noqa: E402
    BUILTIN_TOOLS,
    custom_tools_prompt,
    default_tokenizer_path,
    load_tokenizer,
    parse_tool_calls,
    parse_tools,
    system_prompt,
)

DATE = datetime.date(2024, 9, 21)
SONGS = {
    "name": "trending_songs",
    "description": "Returns the trending songs on a Music site",
    "parameters": {
        "type": "object",
        "properties": {
            "n": {"type": "int", "description": "The number of songs to return"},
            "genre": {"type": "str", "description": "The genre of the songs to return"},
        },
        "required": ["n"],
    },
}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city, in 'C' & <units>",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"},
                                                    "days": {"type": "integer"}}, "required": ["city", "days"]}}}
NO_PARAMS = {"name": "now", "description": None}
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


@pytest.fixture(scope="module")
def ref_chat():
    return ref_chat_format.ChatFormat(ref_tokenizer.Tokenizer(default_tokenizer_path()))


def md_prompts() -> list[str]:
    """The input prompts of llama_models' Llama 3.1 prompt-format document, rendered by Meta's generator."""
    md = (resources.files("llama_models.llama3_1") / "prompt_format.md").read_text(encoding="utf-8")
    return re.findall(r"##### Input Prompt Format\n```\n(.*?)\n```", md, re.S)


def call(name, **arguments):
    return {"name": name, "arguments": arguments, "call_id": f"id_{name}"}


@pytest.mark.parametrize("index, tools, tool_format, user", [
    (2, ["brave_search", "wolfram_alpha"], "json", "Search the web for the latest price of 1oz gold?"),
    (5, [SONGS], "json", "Use tools to get latest trending songs"),
    (6, [SONGS], "function_tag", "Use tools to get latest trending songs"),
])
def test_tool_prompts_match_metas_prompt_format_document(tok, index, tools, tool_format, user):
    md = md_prompts()[index]
    dialog = [SYSTEM, {"role": "user", "content": user}]
    ids = tok.encode_dialog(dialog, tools=tools, tool_format=tool_format, date=DATE)
    assert ids == tok.encode(md, allowed_special="all")


def test_history_tool_call_matches_metas_full_interaction(tok):
    """The document's built-in round trip writes the wolfram_alpha call after <|python_tag|>, ending <|eom_id|>."""
    md = tok.encode(md_prompts()[4], allowed_special="all")
    turn = tok.encode_dialog([{"role": "assistant", "content": "",
                               "tool_calls": [call("wolfram_alpha", query="100th decimal of pi")]}])[1:]
    assert tok.decode(turn) == ('<|start_header_id|>assistant<|end_header_id|>\n\n<|python_tag|>'
                                'wolfram_alpha.call(query="100th decimal of pi")<|eom_id|>')
    assert any(md[i : i + len(turn)] == turn for i in range(len(md)))


def test_system_prompt_lines():
    assert system_prompt(parse_tools(["code_interpreter"]), None, DATE) == (
        "Environment: ipython\n\nCutting Knowledge Date: December 2023\nToday Date: 21 September 2024\n")
    assert system_prompt(parse_tools([]), "Be brief.", DATE) == (
        "Cutting Knowledge Date: December 2023\nToday Date: 21 September 2024\n\nBe brief.\n")
    today = datetime.date.today().strftime("%d %B %Y")
    assert system_prompt(parse_tools(["wolfram_alpha"])).endswith(f"Today Date: {today}\n")


def test_custom_tool_prompts_for_several_tools():
    """Meta's templates: one JSON block per tool, values unescaped (None as 'None'); the <function=...> list with
    jinja's tojson (sorted keys, HTML-escaped ' < > &)."""
    tools = parse_tools([SONGS, WEATHER, NO_PARAMS]).custom
    text = custom_tools_prompt(tools, "json")
    assert text.count('    "type": "function",\n') == 3 and text.endswith("}\n\nReturn function calls in JSON format.")
    assert '"description": "Weather for a city, in \'C\' & <units>",' in text
    assert '"required": ["city", "days"]' in text and '"properties": [\n            ],' in text
    assert '"description": "None"' in text and '"name": "now",\n        "description": "None",' in text
    tagged = custom_tools_prompt(tools, "function_tag")
    assert ("Use the function 'get_weather' to 'Weather for a city, in 'C' & <units>':\n"
            '{"name": "get_weather", "description": "Weather for a city, in \'C\' & <units>", "parameters": '
            '{"city": {"description": "City name", "param_type": "string", "required": true}, '
            '"days": {"description": null, "param_type": "integer", "required": true}}}\n\n') in tagged
    assert "Use the function 'now' to 'None':\n" in tagged and tagged.endswith("- Put the entire function call reply "
                                                                              "on one line")
    escaped = custom_tools_prompt(parse_tools([{"name": "f", "parameters": {"properties": {
        "x": {"type": "string", "description": "a<b & it's"}}}}]).custom, "function_tag")
    assert '"description": "a\\u003cb \\u0026 it\\u0027s"' in escaped


def ref_message(message: dict) -> RawMessage:
    """A herd message as llama_models' RawMessage: "ipython" is its "tool" role, a call ends the message."""
    calls = [RefToolCall(call_id=c["call_id"], arguments=c["arguments"],
                         tool_name=BuiltinTool(c["name"]) if c["name"] in BUILTIN_TOOLS else c["name"])
             for c in message.get("tool_calls", [])]
    role = "tool" if message["role"] in ("tool", "ipython") else message["role"]
    return RawMessage(role=role, content=message["content"], tool_calls=calls,
                      stop_reason=StopReason.end_of_message if calls else None)


def ref_ids(tok, ref_chat, dialog: list[dict], tools, tool_format: str) -> list[int]:
    """llama_models' ids for the same dialog, given the same tool prompt texts (checked byte for byte above).

    The one difference herd makes on purpose: a built-in or JSON call (not code_interpreter, not <function=...>)
    gets <|python_tag|> before it, as Llama 3.1 writes it (prompt_format.md) and llama_models 0.3 does not."""
    messages = list(dialog)
    if tools is not None:
        parsed = parse_tools(tools)
        instruction = None
        if messages[0]["role"] == "system":
            instruction = messages.pop(0)["content"]
        preamble = [{"role": "system", "content": system_prompt(parsed, instruction, DATE)}]
        if parsed.custom:
            preamble.append({"role": "user", "content": custom_tools_prompt(parsed.custom, tool_format)})
        messages = preamble + messages
    fmt = ref_chat_format.ToolPromptFormat(tool_format)
    ids = [tok.bos_id]
    header = len(ref_chat._encode_header("assistant"))
    for message in messages:
        part, _ = ref_chat.encode_message(ref_message(message), fmt)
        calls = message.get("tool_calls", [])
        if calls and calls[0]["name"] != "code_interpreter" and tool_format == "json":
            part.insert(header, tok.special_tokens["<|python_tag|>"])
        ids += part
    # The reference always adds the assistant header; herd does not after an assistant turn.
    return ids + (ref_chat._encode_header("assistant") if messages[-1]["role"] != "assistant" else [])


ASK = {"role": "user", "content": "What is 45 - 12?"}
DIALOGS = [
    ("plain", [SYSTEM, ASK], None, "json"),
    ("builtin tools, no system", [ASK], ["brave_search", "wolfram_alpha"], "json"),
    ("code interpreter only", [SYSTEM, ASK], ["code_interpreter"], "json"),
    ("wolfram round trip", [SYSTEM, ASK, {"role": "assistant", "content": "",
                                          "tool_calls": [call("wolfram_alpha", query="45 - 12")]},
                            {"role": "ipython", "content": "33"}, {"role": "assistant", "content": "It is 33."},
                            {"role": "user", "content": "Thanks"}], ["wolfram_alpha"], "json"),
    ("brave search", [ASK, {"role": "assistant", "content": "",
                            "tool_calls": [call("brave_search", query="latest price of 1oz gold")]},
                      {"role": "tool", "content": '{"price": "$2,600"}'}], ["brave_search", "code_interpreter"],
     "json"),
    ("code interpreter call", [SYSTEM, ASK, {"role": "assistant", "content": "", "tool_calls": [call(
        "code_interpreter", code="def f(a, b):\n    return a - b\n\nprint(f(45, 12))")]},
                               {"role": "ipython", "content": "[stdout]\n33\n[/stdout]"}], ["code_interpreter"],
     "json"),
    ("json custom call", [SYSTEM, {"role": "user", "content": "Top 10 songs?"}, {
        "role": "assistant", "content": "", "tool_calls": [call("trending_songs", n="10", genre="all")]},
                          {"role": "tool", "content": '["a", "b"]'}], [SONGS, "brave_search"], "json"),
    ("two custom tools, OpenAI shape", [{"role": "user", "content": "Weather in Paris for 3 days?"}, {
        "role": "assistant", "content": "",
        "tool_calls": [call("get_weather", city="Paris", days=3)]}, {"role": "tool", "content": "sunny"},
                                        {"role": "assistant", "content": "Sunny."}], [SONGS, WEATHER], "json"),
    ("function tag call", [SYSTEM, {"role": "user", "content": "Top songs?"}, {
        "role": "assistant", "content": "", "tool_calls": [call("trending_songs", n=10)]},
                           {"role": "ipython", "content": "none"}], [SONGS], "function_tag"),
    ("function tag with code", [SYSTEM, ASK, {"role": "assistant", "content": "", "tool_calls": [call(
        "code_interpreter", code="print(45 - 12)")]}], [SONGS, "code_interpreter"], "function_tag"),
    ("content beside a call", [ASK, {"role": "assistant", "content": "Let me compute.", "tool_calls": [call(
        "code_interpreter", code="print(45-12)")]}, {"role": "ipython", "content": "33"}], None, "json"),
    ("no-parameter tool", [SYSTEM, {"role": "user", "content": "Time?"}, {
        "role": "assistant", "content": "", "tool_calls": [call("now")]}], [NO_PARAMS], "json"),
    ("tool results without tools", [SYSTEM, ASK, {"role": "ipython", "content": "33"}], None, "json"),
]


@pytest.mark.parametrize("name, dialog, tools, tool_format", DIALOGS, ids=[d[0] for d in DIALOGS])
def test_dialog_ids_match_llama_models(tok, ref_chat, name, dialog, tools, tool_format):
    ids = tok.encode_dialog(dialog, tools=tools, tool_format=tool_format, date=DATE)
    assert ids == ref_ids(tok, ref_chat, dialog, tools, tool_format)


def test_reference_parses_herds_calls_back(tok, ref_chat):
    """Each call herd writes (alone in its message) is read back by llama_models' decoder as the same call."""
    for _, dialog, tools, tool_format in DIALOGS:
        for message in dialog:
            if message.get("tool_calls") and not message["content"]:
                ids = tok.encode_dialog([message], tool_format=tool_format)[1:]
                parsed = ref_chat.decode_assistant_message(ids, StopReason.end_of_turn)
                name = getattr(parsed.tool_calls[0].tool_name, "value", parsed.tool_calls[0].tool_name)
                assert (name, parsed.tool_calls[0].arguments) == (message["tool_calls"][0]["name"],
                                                                   message["tool_calls"][0]["arguments"])
                assert parsed.stop_reason == StopReason.end_of_message


REPLIES = [
    '<|python_tag|>brave_search.call(query="latest price of 1oz gold")',
    'wolfram_alpha.call(query="100th decimal of pi")<|eom_id|>',
    "<|python_tag|>def is_prime(n):\n    return n > 1\n\nprint(is_prime(7))<|eom_id|>",
    '<|python_tag|>{"type": "function", "name": "trending_songs", "parameters": {"n": "10", "genre": "all"}}',
    '{"name": "get_weather", "parameters": {"city": "Paris", "days": 3}}',
    '<function=trending_songs>{"n": 10}</function><|eot_id|>',
    "<function=get_weather>{'city': 'Paris'}</function>",
    'Sure. <function=f>{"a": 1}</function> is my call',
    '[get_boiling_point(liquid_name="water", celcius=True), get_melting_point(substance="ice")]',
    '{"name": "brave_search", "parameters": {"q": "cats"}}',
    'I will run search.call(query="cats") now',
    "The answer is 33.",
    '{"answer": 33}',
    "[1, 2, 3]",
    "<function=f>{not json}</function>",
    "<|python_tag|><function=f>{not json}</function>",
    "<|start_header_id|>assistant<|end_header_id|>\n\n  Hello there.<|eot_id|>",
    "  spaced reply  ",
    "",
]


@pytest.mark.parametrize("reply", REPLIES)
def test_reply_parsing_matches_llama_models(ref_chat, reply):
    expected = ref_chat.decode_assistant_message_from_content(reply, StopReason.end_of_turn)
    content, calls = parse_tool_calls(reply)
    assert content == expected.content
    assert [(c.name, c.arguments) for c in calls] == [
        (getattr(c.tool_name, "value", c.tool_name), c.arguments) for c in expected.tool_calls]
    assert all(c.call_id.startswith("call_") for c in calls)


@pytest.mark.parametrize("reply", ['{"name": "brave_search", "parameters": {}}', "[f(x=g())]"])
def test_replies_the_reference_raises_on_are_plain_text(reply):
    assert parse_tool_calls(reply) == (reply, [])


def test_json_call_without_parameters_has_no_arguments():
    """llama_models raises KeyError on it; herd reads a call with empty arguments."""
    content, calls = parse_tool_calls('{"name": "now"}')
    assert content == "" and [(c.name, c.arguments) for c in calls] == [("now", {})]


def test_loss_mask_trains_calls_not_tool_results(tok):
    dialog = DIALOGS[3][1]  # wolfram round trip: call, ipython result, answer
    ids, mask = tok.encode_dialog_with_mask(dialog, tools=["wolfram_alpha"], date=DATE)
    assert ids == tok.encode_dialog(dialog, add_generation_prompt=False, tools=["wolfram_alpha"], date=DATE)
    trained = tok.decode([i for i, m in zip(ids, mask, strict=True) if m])
    assert trained == '<|python_tag|>wolfram_alpha.call(query="45 - 12")<|eom_id|>It is 33.<|eot_id|>'
    plain = [m for m in dialog if "tool_calls" not in m and m["role"] != "ipython"]
    assert tok.encode_dialog_with_mask(plain) == tok.encode_dialog_with_mask(plain, tools=None)


@pytest.mark.parametrize("tools, message", [
    ("brave_search", "tools must be a list of tools, got str"),
    (["calculator"], "tools[0]: unknown built-in tool 'calculator'"),
    ([{"type": "function"}], "tools[0].function must be an object"),
    ([{"type": "retrieval", "function": {"name": "f"}}], "tools[0].type must be 'function'"),
    ([{"type": "function", "function": {"name": "a b"}}], "tools[0].function.name must be 1-64 letters"),
    ([{"name": "f", "parameters": {"type": "array"}}], "tools[0].parameters.type must be 'object'"),
    ([{"name": "f", "parameters": {"properties": []}}], "tools[0].parameters.properties must be an object"),
    ([{"name": "f", "parameters": {"properties": {"x": {}}, "required": ["y"]}}],
     "tools[0].parameters.required names 'y'"),
    ([{"name": "f", "parameters": {"properties": {"x": 3}}}], "tools[0].parameters.properties.x must be a JSON"),
    ([{"name": "f", "description": 3}], "tools[0].description must be a string"),
    ([{"name": "f"}, {"name": "f"}], "tool 'f' is defined twice"),
    ([3], "tools[0] must be a built-in tool name or a function definition"),
])
def test_bad_tools_name_the_field(tok, tools, message):
    with pytest.raises(HerdError, match=re.escape(message)):
        tok.encode_dialog([ASK], tools=tools)


@pytest.mark.parametrize("message, error", [
    ({"role": "user", "content": "", "tool_calls": [call("f")]}, "message 0 is a user message with tool_calls"),
    ({"role": "assistant", "content": "", "tool_calls": "f"}, "message 0 tool_calls must be a list"),
    ({"role": "assistant", "content": "", "tool_calls": [{"arguments": {}}]}, "tool_calls[0] needs a 'name'"),
    ({"role": "assistant", "content": "", "tool_calls": [{"name": "f", "arguments": "{}"}]}, "needs 'arguments'"),
    ({"role": "assistant", "content": "", "tool_calls": [call("brave_search", q="x")]},
     "calls brave_search, whose arguments need 'query'"),
])
def test_bad_tool_calls_name_the_message(tok, message, error):
    with pytest.raises(HerdError, match=re.escape(error)):
        tok.encode_dialog([message])


def test_reply_parsing_matches_llama_models_on_mixed_fragments(ref_chat, capsys):
    """300 seeded replies glued from call-like fragments parse as llama_models parses them (where it does not
    raise)."""
    fragments = ["<|python_tag|>", "<|eom_id|>", "<|eot_id|>", " ", "\n", "Sure, ", "print(1)", "x = [1, 2]",
                 'brave_search.call(query="a b")', 'tool.call(query="q")', "<function=f>", '{"a": 1}', "</function>",
                 '{"name": "g", "parameters": {"b": "c"}}', '{"type": "function", "name": "h", "parameters": {}}',
                 "[k(a=1)]", "[k(a=1), m(b=2)]", "{'x': 'y'}", '"', "}", "{", "]", "["]
    rng = random.Random(0)
    compared = 0
    for _ in range(300):
        reply = "".join(rng.choice(fragments) for _ in range(rng.randint(1, 5)))
        try:
            expected = ref_chat.decode_assistant_message_from_content(reply, StopReason.end_of_turn)
        except Exception:  # noqa: BLE001 - llama_models raises on some malformed calls; herd reads them as text
            continue
        content, calls = parse_tool_calls(reply)
        assert (content, [(c.name, c.arguments) for c in calls]) == (expected.content, [
            (getattr(c.tool_name, "value", c.tool_name), c.arguments) for c in expected.tool_calls]), reply
        compared += 1
    capsys.readouterr()  # llama_models prints its JSON errors
    assert compared > 250


def test_random_tool_dialogs_match_llama_models(tok, ref_chat):
    """60 seeded dialogs mixing tools, calls of each kind, results and answers: ids as llama_models' ChatFormat."""
    rng = random.Random(1)
    texts = ["What is 45 - 12?", "Weather in Oslo", "ok", "Line one\nline two", "JSON: {\"a\": [1, 2]}", "ünïcødé ✓"]
    calls = [call("wolfram_alpha", query="45 - 12"), call("brave_search", query="oslo weather"),
             call("code_interpreter", code="import math\nprint(math.pi)"), call("trending_songs", n="5", genre="pop"),
             call("get_weather", city="Oslo", days=2), call("now")]
    tool_sets = [None, ["brave_search"], ["code_interpreter", "wolfram_alpha"], [SONGS], [SONGS, WEATHER, NO_PARAMS],
                 ["brave_search", WEATHER]]
    for _ in range(60):
        dialog = [SYSTEM] if rng.random() < 0.5 else []
        for _ in range(rng.randint(1, 3)):
            dialog.append({"role": "user", "content": rng.choice(texts)})
            if rng.random() < 0.6:
                dialog += [{"role": "assistant", "content": "", "tool_calls": [rng.choice(calls)]},
                           {"role": rng.choice(["tool", "ipython"]), "content": rng.choice(texts)}]
            dialog.append({"role": "assistant", "content": rng.choice(texts)})
        dialog = dialog[: rng.randint(1, len(dialog))]
        tools, tool_format = rng.choice(tool_sets), rng.choice(["json", "function_tag"])
        ids = tok.encode_dialog(dialog, tools=tools, tool_format=tool_format, date=DATE)
        assert ids == ref_ids(tok, ref_chat, dialog, tools, tool_format), (dialog, tools, tool_format)
