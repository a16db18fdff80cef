"""The Llama 3 chat format: messages -> `<|begin_of_text|>` + headed, `<|eot_id|>`-ended turns, with Llama 3.1's tools.

Also owns the SFT loss mask (1 on assistant content and its `<|eot_id|>`/`<|eom_id|>`) and message validation.
With `tools`, the dialog opens with Meta's recommended system message (herd.tokenizer.tool_calls) and, for custom
tools, the user turn that defines them. An assistant message's "tool_calls" are written after `<|python_tag|>`
and end with `<|eom_id|>`; "ipython" (or "tool") messages carry the results.
"""

import datetime
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from herd.errors import HerdError
from herd.tokenizer.tool_calls import (
    BUILTIN_TOOLS,
    PYTHON_TAG,
    ToolFormat,
    ToolList,
    Tools,
    custom_tools_prompt,
    parse_tools,
    system_prompt,
    tool_call_text,
)

if TYPE_CHECKING:
    from herd.tokenizer.tiktoken_bpe import Tokenizer

Message = Mapping[str, Any]
"""A chat message: {"role": "system" | "user" | "assistant" | "ipython" | "tool", "content": str}; an assistant
message may also carry "tool_calls": [{"name": str, "arguments": dict, "call_id": str (optional)}]."""

# Role a message may carry -> the name written in its header ("tool" is Llama 3's "ipython").
HEADER_ROLES = {"system": "system", "user": "user", "assistant": "assistant", "ipython": "ipython", "tool": "ipython"}


class ChatFormat:
    """Encodes dialogs for one tokenizer; all special ids come from `tokenizer.special_tokens`."""

    def __init__(self, tokenizer: "Tokenizer") -> None:
        self.tokenizer = tokenizer
        self._headers = {role: self._encode_header(header) for role, header in HEADER_ROLES.items()}

    def encode_dialog(
        self, messages: Sequence[Message], add_generation_prompt: bool = True, *, tools: ToolList | None = None,
        tool_format: ToolFormat = "json", date: datetime.date | None = None,
    ) -> list[int]:
        """`<|begin_of_text|>` + every message, then the empty assistant header for the model to reply.

        The header is added only with `add_generation_prompt` and when the last message is not the assistant's.
        `tools` (a list `herd.tokenizer.parse_tools` reads, e.g. ["brave_search", {"name": ..., ...}]) puts Meta's
        tool system prompt first (the dialog's own system message becomes its last paragraph; `date` is the
        "Today Date", default today) and, for custom tools, their definitions in `tool_format` as a user turn.
        """
        return self._render(messages, add_generation_prompt, tools, tool_format, date)[0]

    def encode_dialog_with_mask(
        self, messages: Sequence[Message], add_generation_prompt: bool = False, *, tools: ToolList | None = None,
        tool_format: ToolFormat = "json", date: datetime.date | None = None,
    ) -> tuple[list[int], list[int]]:
        """`(ids, loss_mask)` for SFT: ids as `encode_dialog`, mask 1 where the model is trained.

        That is exactly the assistant content tokens (with a tool call's `<|python_tag|>` and call text) and each
        assistant `<|eot_id|>`/`<|eom_id|>`; 0 on `<|begin_of_text|>`, every header, the tool prompts and all
        non-assistant content (tool results included).
        """
        return self._render(messages, add_generation_prompt, tools, tool_format, date)

    def _render(
        self, messages: Sequence[Message], add_generation_prompt: bool, tools: ToolList | None, tool_format: ToolFormat,
        date: datetime.date | None,
    ) -> tuple[list[int], list[int]]:
        validate_messages(messages)
        ids = [self.tokenizer.bos_id]
        mask = [0]
        if tools is not None:
            preamble, messages = self._tool_preamble(parse_tools(tools), messages, tool_format, date)
            ids += preamble
            mask += [0] * len(preamble)
        for message in messages:
            header = self._headers[message["role"]]
            if message.get("tool_calls"):
                body = self._encode_calls(message, tool_format)
            else:
                body = self._encode_body(message["content"])
            ids += header + body
            mask += [0] * len(header) + [int(message["role"] == "assistant")] * len(body)
        if add_generation_prompt and (not messages or messages[-1]["role"] != "assistant"):
            ids += self._headers["assistant"]
            mask += [0] * len(self._headers["assistant"])
        return ids, mask

    def _tool_preamble(
        self, tools: Tools, messages: Sequence[Message], tool_format: ToolFormat, date: datetime.date | None
    ) -> tuple[list[int], Sequence[Message]]:
        """The tool system turn (and custom tools' user turn), and the messages left after the system one.

        These texts are Meta's to the byte, so they are not stripped as message contents are."""
        instruction = None
        if messages[0]["role"] == "system":
            instruction, messages = messages[0]["content"].strip(), messages[1:]
        eot = [self.tokenizer.eot_id]
        ids = self._headers["system"] + self.tokenizer.encode(system_prompt(tools, instruction, date)) + eot
        if tools.custom:
            ids += self._headers["user"] + self.tokenizer.encode(custom_tools_prompt(tools.custom, tool_format)) + eot
        return ids, messages

    def _encode_header(self, header_role: str) -> list[int]:
        special = self.tokenizer.special_tokens
        return (
            [special["<|start_header_id|>"]]
            + self.tokenizer.encode(header_role)
            + [special["<|end_header_id|>"]]
            + self.tokenizer.encode("\n\n")
        )

    def _encode_body(self, content: str) -> list[int]:
        return self.tokenizer.encode(content.strip()) + [self.tokenizer.eot_id]

    def _encode_calls(self, message: Message, tool_format: ToolFormat) -> list[int]:
        """`<|python_tag|>` (not for `<function=...>` calls), the content, each call's text, `<|eom_id|>`."""
        calls = message["tool_calls"]
        function_tag = tool_format == "function_tag" and calls[0]["name"] != "code_interpreter"
        ids = [] if function_tag else [self.tokenizer.special_tokens[PYTHON_TAG]]
        content = message["content"].strip()
        if content:
            ids += self.tokenizer.encode(content)
        for call in calls:
            ids += self.tokenizer.encode(tool_call_text(call, tool_format))
        return ids + [self.tokenizer.eom_id]


def validate_messages(messages: Sequence[Message]) -> None:
    """Raise HerdError, naming the message index, unless `messages` is a non-empty list of valid messages."""
    if isinstance(messages, (str, Mapping)) or not isinstance(messages, Sequence):
        raise HerdError(f"a dialog must be a list of messages, got {type(messages).__name__}")
    if not messages:
        raise HerdError("the dialog is empty; pass at least one {'role': ..., 'content': ...} message")
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise HerdError(f"message {i} must be a dict with 'role' and 'content', got {message!r:.80}")
        if message["role"] not in HEADER_ROLES:
            raise HerdError(f"message {i} has unknown role {message['role']!r}; use one of {', '.join(HEADER_ROLES)}")
        if not isinstance(message["content"], str):
            raise HerdError(f"message {i} content must be a str, got {type(message['content']).__name__}")
        if message.get("tool_calls"):
            _validate_calls(message, i)


def _validate_calls(message: Message, i: int) -> None:
    calls = message["tool_calls"]
    if message["role"] != "assistant":
        raise HerdError(f"message {i} is a {message['role']} message with tool_calls; only assistant messages call")
    if isinstance(calls, (str, Mapping)) or not isinstance(calls, Sequence):
        raise HerdError(f"message {i} tool_calls must be a list of {{'name': ..., 'arguments': {{...}}}}")
    for j, call in enumerate(calls):
        if not isinstance(call, Mapping) or not isinstance(call.get("name"), str) or not call["name"]:
            raise HerdError(f"message {i} tool_calls[{j}] needs a 'name' (a non-empty str)")
        if not isinstance(call.get("arguments"), Mapping):
            raise HerdError(f"message {i} tool_calls[{j}] needs 'arguments' (a dict)")
        needed = {"code_interpreter": "code"}.get(call["name"], "query")
        if call["name"] in BUILTIN_TOOLS and not isinstance(call["arguments"].get(needed), str):
            raise HerdError(f"message {i} tool_calls[{j}] calls {call['name']}, whose arguments need {needed!r} (str)")
