"""The Llama 3 chat format: messages -> `<|begin_of_text|>` + headed, `<|eot_id|>`-ended turns.

Also owns the SFT loss mask (1 on assistant content and its `<|eot_id|>`) and message validation.
"""

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from herd.errors import HerdError

if TYPE_CHECKING:
    from herd.tokenizer.tiktoken_bpe import Tokenizer

Message = Mapping[str, str]
"""A chat message: {"role": "system" | "user" | "assistant" | "ipython" | "tool", "content": str}."""

# Role a message may carry -> the name written in its header ("tool" is Llama 3's "ipython").
HEADER_ROLES = {"system": "system", "user": "user", "assistant": "assistant", "ipython": "ipython", "tool": "ipython"}


class ChatFormat:
    """Encodes dialogs for one tokenizer; all special ids come from `tokenizer.special_tokens`."""

    def __init__(self, tokenizer: "Tokenizer") -> None:
        self.tokenizer = tokenizer
        self._headers = {role: self._encode_header(header) for role, header in HEADER_ROLES.items()}

    def encode_dialog(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> list[int]:
        """`<|begin_of_text|>` + every message, then the empty assistant header for the model to reply.

        The header is added only with `add_generation_prompt` and when the last message is not the assistant's.
        """
        return self._render(messages, add_generation_prompt)[0]

    def encode_dialog_with_mask(
        self, messages: Sequence[Message], add_generation_prompt: bool = False
    ) -> tuple[list[int], list[int]]:
        """`(ids, loss_mask)` for SFT: ids as `encode_dialog`, mask 1 where the model is trained.

        That is exactly the assistant content tokens and each assistant `<|eot_id|>`; 0 on
        `<|begin_of_text|>`, every header and all non-assistant content.
        """
        return self._render(messages, add_generation_prompt)

    def _render(self, messages: Sequence[Message], add_generation_prompt: bool) -> tuple[list[int], list[int]]:
        validate_messages(messages)
        ids = [self.tokenizer.bos_id]
        mask = [0]
        for message in messages:
            header = self._headers[message["role"]]
            body = self._encode_body(message["content"])
            ids += header + body
            mask += [0] * len(header) + [int(message["role"] == "assistant")] * len(body)
        if add_generation_prompt and messages[-1]["role"] != "assistant":
            ids += self._headers["assistant"]
            mask += [0] * len(self._headers["assistant"])
        return ids, mask

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
