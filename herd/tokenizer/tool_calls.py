"""Llama 3.1 tool use as text: tool definitions, the system prompts that announce them, call text and reply parsing.

The prompts are Meta's recommended ones (llama_models' `recommended_system_message` and its prompt templates, as
`llama_models/llama3_1/prompt_format.md` shows them): built-in tools on an `Environment: ipython` / `Tools:` line
above the `Cutting Knowledge Date` / `Today Date` lines, custom tools in a user turn either as JSON definitions or
as `<function=...>` instructions. The reply parser follows llama_models' `decode_assistant_message` and `ToolUtils`
rule for rule (built-in `tool.call(query="...")`, code-interpreter code after `<|python_tag|>`, JSON and
`<function=name>{...}` custom calls, python-list calls). Both are written here rather than imported: llama-models
0.3 no longer ships the templates (they need jinja2), and its parser prints to stdout and raises on some malformed
replies; tests/tokenizer/test_chat_tools.py checks bytes, ids and parses against the installed llama_models.
"""

from __future__ import annotations

import ast
import datetime
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from herd.errors import HerdError

BUILTIN_TOOLS = ("brave_search", "wolfram_alpha", "photogen", "code_interpreter")
"""Llama 3.1's built-in tools; `code_interpreter` is implied by `Environment: ipython` and never listed."""
ToolFormat = Literal["json", "function_tag"]
"""How custom tools are announced and called: JSON definitions and calls, or `<function=name>{...}</function>`."""
PYTHON_TAG = "<|python_tag|>"
KNOWLEDGE_CUTOFF = "December 2023"
_FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # OpenAI's rule for function names
_BUILTIN_CALL = re.compile(r'\b(?P<tool_name>\w+)\.call\(query="(?P<query>[^"]*)"\)')
_CUSTOM_CALL = re.compile(r"<function=(?P<function_name>[^}]+)>(?P<args>{.*?})")
_FUNCTION_TAG_RULES = """Think very carefully before calling functions.
If you choose to call a function ONLY reply in the following format with no prefix or suffix:

<function=example_function_name>{"example_name": "example_value"}</function>

Reminder:
- If looking for real time information use relevant functions before falling back to brave_search
- Function calls MUST follow the specified format, start with <function= and end with </function>
- Required parameters MUST be specified
- Only call one function at a time
- Put the entire function call reply on one line"""


def new_call_id() -> str:
    """A fresh id in OpenAI's shape ("call_" + 24 hex digits)."""
    return "call_" + uuid.uuid4().hex[:24]


@dataclass(frozen=True)
class ToolCall:
    """One call of a tool: built-in ones take {"query": ...} (code_interpreter {"code": ...})."""

    name: str
    arguments: dict[str, Any]
    call_id: str = field(default_factory=new_call_id)

    def to_message(self) -> dict[str, Any]:
        """The call as it sits in a message's "tool_calls" list."""
        return {"name": self.name, "arguments": self.arguments, "call_id": self.call_id}


@dataclass(frozen=True)
class ToolParam:
    """One parameter of a custom tool, as Meta's `ToolParamDefinition` holds it."""

    param_type: Any
    description: str | None
    required: bool


@dataclass(frozen=True)
class CustomTool:
    """A custom (user-defined) tool: its name, description and parameters in definition order."""

    name: str
    description: str | None
    params: dict[str, ToolParam]


@dataclass(frozen=True)
class Tools:
    """The tools a dialog offers: built-in names (in the order given) and custom definitions."""

    builtin: tuple[str, ...] = ()
    custom: tuple[CustomTool, ...] = ()


ToolList = Sequence[str | Mapping[str, Any]] | Tools
"""Tools as callers give them: built-in names and function definitions (see `parse_tools`), or parsed `Tools`."""


def parse_tools(tools: ToolList, where: str = "tools") -> Tools:
    """Read a tool list: built-in names ("brave_search", "code_interpreter", ...) and custom function definitions,
    either OpenAI's {"type": "function", "function": {...}} or the bare {"name", "description", "parameters"} with
    `parameters` a JSON schema object. Raises HerdError naming the offending field (e.g. tools[1].function.name)."""
    if isinstance(tools, Tools):
        return tools
    if isinstance(tools, (str, Mapping)) or not isinstance(tools, Sequence):
        raise HerdError(f"{where} must be a list of tools, got {type(tools).__name__}")
    builtin: list[str] = []
    custom: list[CustomTool] = []
    for i, tool in enumerate(tools):
        if isinstance(tool, str):
            if tool not in BUILTIN_TOOLS:
                raise HerdError(f"{where}[{i}]: unknown built-in tool {tool!r}; use one of {', '.join(BUILTIN_TOOLS)}")
            builtin.append(tool)
        elif isinstance(tool, Mapping):
            custom.append(_custom_tool(tool, f"{where}[{i}]"))
        else:
            raise HerdError(f"{where}[{i}] must be a built-in tool name or a function definition (a dict)")
    names = [t.name for t in custom] + builtin
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise HerdError(f"{where}: tool {repeated[0]!r} is defined twice; give each tool once")
    return Tools(tuple(builtin), tuple(custom))


def _custom_tool(tool: Mapping[str, Any], where: str) -> CustomTool:
    if "function" in tool or "type" in tool:
        if tool.get("type") != "function":
            raise HerdError(f"{where}.type must be 'function', got {tool.get('type')!r}")
        where, tool = f"{where}.function", tool.get("function")
        if not isinstance(tool, Mapping):
            raise HerdError(f"{where} must be an object with name, description and parameters")
    name = tool.get("name")
    if not isinstance(name, str) or not _FUNCTION_NAME.fullmatch(name):
        raise HerdError(f"{where}.name must be 1-64 letters, digits, '_' or '-', got {name!r}")
    description = tool.get("description")
    if description is not None and not isinstance(description, str):
        raise HerdError(f"{where}.description must be a string, got {type(description).__name__}")
    return CustomTool(name, description, _params(tool.get("parameters"), f"{where}.parameters"))


def _params(schema: Any, where: str) -> dict[str, ToolParam]:
    """A JSON schema object's properties as Meta's parameter definitions."""
    if schema is None:
        return {}
    if not isinstance(schema, Mapping):
        raise HerdError(f"{where} must be a JSON schema object, got {type(schema).__name__}")
    if schema.get("type", "object") != "object":
        raise HerdError(f"{where}.type must be 'object', got {schema.get('type')!r}")
    properties = schema.get("properties", {})
    if not isinstance(properties, Mapping):
        raise HerdError(f"{where}.properties must be an object mapping names to schemas")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise HerdError(f"{where}.required must be a list of property names")
    unknown = [r for r in required if r not in properties]
    if unknown:
        raise HerdError(f"{where}.required names {unknown[0]!r}, which is not in {where}.properties")
    params = {}
    for name, prop in properties.items():
        if not isinstance(prop, Mapping):
            raise HerdError(f"{where}.properties.{name} must be a JSON schema object")
        description = prop.get("description")
        if description is not None and not isinstance(description, str):
            raise HerdError(f"{where}.properties.{name}.description must be a string")
        params[name] = ToolParam(prop.get("type", "string"), description, name in required)
    return params


def system_prompt(tools: Tools, instruction: str | None = None, date: datetime.date | None = None) -> str:
    """Meta's recommended Llama 3.1 system message: tool lines (when there are tools), the knowledge-cutoff and
    today's date lines, then `instruction` (the dialog's own system prompt) after a blank line; ends with "\\n"."""
    text = ""
    if tools.builtin or tools.custom:
        text = "Environment: ipython\n"
        listed = [name for name in tools.builtin if name != "code_interpreter"]
        if listed:
            text += f"Tools: {', '.join(listed)}"
        text += "\n"
    today = (date or datetime.date.today()).strftime("%d %B %Y")
    text += f"Cutting Knowledge Date: {KNOWLEDGE_CUTOFF}\nToday Date: {today}"
    if instruction:
        text += "\n\n" + instruction
    return text + "\n"


def custom_tools_prompt(tools: Sequence[CustomTool], tool_format: ToolFormat = "json") -> str:
    """The user turn that defines custom tools, as Meta's JSON or `<function=...>` template writes it."""
    if tool_format == "json":
        return _json_tools_prompt(tools)
    if tool_format == "function_tag":
        return _function_tag_prompt(tools)
    raise HerdError(f"unknown tool format {tool_format!r}; use 'json' or 'function_tag'")


def _json_tools_prompt(tools: Sequence[CustomTool]) -> str:
    # Meta's template writes each definition by hand (not json.dumps): values go in unescaped, None as "None".
    text = (
        "Answer the user's question by making use of the following functions if needed.\n"
        "If none of the function can be used, please say so.\n"
        "Here is a list of functions in JSON format:\n"
    )
    for tool in tools:
        properties = ",".join(
            "\n                {\n"
            f'                    "{name}": {{\n'
            '                        "type": "object",\n'
            f'                        "description": "{param.description}"\n'
            "                    }\n"
            "                }"
            for name, param in tool.params.items()
        )
        required = _tojson([name for name, param in tool.params.items() if param.required])
        text += (
            "{\n"
            '    "type": "function",\n'
            '    "function": {\n'
            f'        "name": "{tool.name}",\n'
            f'        "description": "{tool.description}",\n'
            '        "parameters": {\n'
            '            "type": "object",\n'
            f'            "properties": [{properties}\n'
            "            ],\n"
            f'            "required": {required}\n'
            "        }\n"
            "    }\n"
            "}\n"
        )
    return text + "\nReturn function calls in JSON format."


def _function_tag_prompt(tools: Sequence[CustomTool]) -> str:
    text = "You have access to the following functions:\n\n"
    for tool in tools:
        params = {name: {"param_type": p.param_type, "description": p.description, "required": p.required}
                  for name, p in tool.params.items()}
        text += (
            f"Use the function '{tool.name}' to '{tool.description}':\n"
            f'{{"name": "{tool.name}", "description": "{tool.description}", "parameters": {_tojson(params)}}}\n\n'
        )
    return text + _FUNCTION_TAG_RULES


def _tojson(value: Any) -> str:
    """jinja2's `tojson` filter: sorted keys, and <, >, &, ' escaped for HTML."""
    text = json.dumps(value, sort_keys=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").replace("'", "\\u0027")


def tool_call_text(call: Mapping[str, Any], tool_format: ToolFormat = "json") -> str:
    """The text of one call in an assistant turn (after `<|python_tag|>` where one is written)."""
    name, arguments = call["name"], call["arguments"]
    if name in ("brave_search", "wolfram_alpha", "photogen"):
        return f'{name}.call(query="{arguments["query"]}")'
    if name == "code_interpreter":
        return arguments["code"]
    if tool_format == "function_tag":
        return f"<function={name}>{json.dumps(arguments)}</function>"
    return json.dumps({"type": "function", "name": name, "parameters": arguments})


def parse_tool_calls(reply: str) -> tuple[str, list[ToolCall]]:
    """An assistant reply -> (content, tool calls), as llama_models' `decode_assistant_message` reads it.

    At most one call is found; its reply's content is then "". A reply that is no call is returned with
    `<|python_tag|>`, a leading assistant header and a trailing `<|eot_id|>`/`<|eom_id|>` removed.
    """
    content = reply.strip(" ")
    header = "<|start_header_id|>assistant<|end_header_id|>\n\n"
    content = content.removeprefix(header)
    ipython = content.startswith(PYTHON_TAG)
    content = content.removeprefix(PYTHON_TAG)
    for end in ("<|eot_id|>", "<|eom_id|>"):
        if content.endswith(end):
            content = content[: -len(end)]
            break
    call = _custom_call(content)
    if call is not None:
        name, arguments = call
        if name in BUILTIN_TOOLS:  # a built-in tool called the custom way: its first argument is the query
            arguments = {"query": next(iter(arguments.values()))} if arguments else None
    elif (match := _BUILTIN_CALL.search(content)) is not None:
        name, arguments = match.group("tool_name"), {"query": match.group("query")}
    elif ipython:
        name, arguments = "code_interpreter", {"code": content}
    else:
        return content, []
    if arguments is None:
        return content, []
    return "", [ToolCall(name, arguments)]


def _custom_call(text: str) -> tuple[str, dict[str, Any]] | None:
    """A `<function=name>{...}` call, a JSON {"name": ..., "parameters": ...} call or a python-list call."""
    match = _CUSTOM_CALL.search(text)
    if match is not None:
        try:
            arguments = json.loads(match.group("args").replace("'", '"'))
        except json.JSONDecodeError:
            return None
        return (match.group("function_name"), arguments) if isinstance(arguments, dict) else None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if isinstance(value, dict):
        if value.get("type") != "function" and "name" not in value:
            return None
        name, arguments = value.get("name"), value.get("parameters", {})
        return (name, arguments) if isinstance(name, str) and isinstance(arguments, dict) else None
    return _python_list_call(text)


def _python_list_call(text: str) -> tuple[str, dict[str, Any]] | None:
    """The first call of a `[name(key=value, ...), ...]` reply (literal keyword arguments only)."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Expr) or not isinstance(tree.body[0].value, ast.List):
        return None
    calls = tree.body[0].value.elts
    if not calls or not all(isinstance(c, ast.Call) and isinstance(c.func, ast.Name) and not c.args for c in calls):
        return None
    first = calls[0]
    try:
        return first.func.id, {k.arg: ast.literal_eval(k.value) for k in first.keywords}
    except ValueError:
        return None
