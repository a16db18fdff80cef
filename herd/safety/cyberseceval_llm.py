"""The models CyberSecEval talks to: a herd model in the Llama 3 chat format, or any OpenAI-compatible endpoint
through the `openai` client. Both answer batches of chats greedily; None marks a reply the endpoint's content
filter refused (a 400 with code "content_filter", or finish_reason "content_filter", as a guarded `herd serve`
gives). Both say how many tokens they hold (an endpoint's /v1/models max_model_len, as herd serve and vLLM report it)
and count a chat's prompt tokens, so a judge's prompt can be fitted to its context."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from herd.errors import HerdError
from herd.generation import generate_tokens
from herd.model import Transformer
from herd.tokenizer import Message, Tokenizer


class ChatModel(Protocol):
    """Something that answers chats: the model under test or the judge."""

    name: str
    context: int | None
    """Tokens a prompt and its reply may hold together; None when unknown."""

    def chat(self, conversations: Sequence[Sequence[Message]], max_tokens: int) -> list[str | None]:
        """One greedy reply per conversation (None where a content filter refused it)."""
        ...

    def prompt_tokens(self, conversation: Sequence[Message]) -> int | None:
        """Tokens of the conversation's prompt; None when the model refuses it as too long."""
        ...


class HerdChat:
    """A herd model answering in the Llama 3 chat format, in batches."""

    def __init__(self, model: Transformer, tok: Tokenizer, name: str, *, batch_size: int = 8) -> None:
        self.model, self.tok, self.name, self.batch_size = model.eval(), tok, name, batch_size
        self.context: int | None = model.config.max_seq_len

    @classmethod
    def load(cls, path: str | Path, **kwargs) -> HerdChat:
        from herd.checkpoint import load

        model, tok = load(path)
        return cls(model, tok, Path(str(path)).name, **kwargs)

    def chat(self, conversations: Sequence[Sequence[Message]], max_tokens: int) -> list[str | None]:
        prompts = [self.tok.encode_dialog(list(c)) for c in conversations]
        replies: list[str | None] = []
        for start in range(0, len(prompts), self.batch_size):
            results = generate_tokens(self.model, prompts[start : start + self.batch_size], max_new_tokens=max_tokens,
                                      stop_ids=self.tok.stop_ids, truncate=True)
            replies += [self.tok.decode(r.tokens) for r in results]
        return replies

    def prompt_tokens(self, conversation: Sequence[Message]) -> int:
        return len(self.tok.encode_dialog(list(conversation)))


class EndpointChat:
    """An OpenAI-compatible chat endpoint (`base_url` ends in /v1), asked by `workers` threads at once."""

    def __init__(self, base_url: str, model: str | None = None, api_key: str | None = None, *, workers: int = 4,
                 timeout: float = 300.0) -> None:
        try:
            import openai
        except ImportError:
            raise ImportError("talking to an endpoint needs the openai client: pip install 'herd[safety]'") from None
        self._openai = openai
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or "none", max_retries=2, timeout=timeout)
        self.workers = workers
        try:
            cards = self.client.models.list().data
            self.name = model or cards[0].id
        except (openai.APIError, IndexError) as error:
            if model is None:
                raise HerdError(f"cannot list the models of {base_url}; pass the model name ({error})") from None
            cards, self.name = [], model
        card = next((c for c in cards if c.id == self.name), None)
        self.context: int | None = getattr(card, "max_model_len", None)

    def _one(self, messages: Sequence[Message], max_tokens: int) -> str | None:
        try:
            response = self.client.chat.completions.create(model=self.name, messages=list(messages),
                                                           max_tokens=max_tokens, temperature=0.0)
        except self._openai.BadRequestError as error:
            if error.code == "content_filter":
                return None
            raise HerdError(f"the endpoint refused a request: {error.message}") from None
        except self._openai.APIError as error:
            raise HerdError(f"the endpoint failed: {error}") from None
        choice = response.choices[0]
        return None if choice.finish_reason == "content_filter" else choice.message.content or ""

    def prompt_tokens(self, conversation: Sequence[Message]) -> int | None:
        """The endpoint's own count (the usage of a 1-token reply); None when it refuses the prompt (too long for
        its context), 0 when its content filter refuses it (the judged request then records the refusal)."""
        try:
            response = self.client.chat.completions.create(model=self.name, messages=list(conversation),
                                                           max_tokens=1, temperature=0.0)
        except self._openai.BadRequestError as error:
            return 0 if error.code == "content_filter" else None
        except self._openai.APIError as error:
            raise HerdError(f"the endpoint failed: {error}") from None
        return response.usage.prompt_tokens if response.usage else None

    def chat(self, conversations: Sequence[Sequence[Message]], max_tokens: int) -> list[str | None]:
        with ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(lambda c: self._one(c, max_tokens), conversations))
