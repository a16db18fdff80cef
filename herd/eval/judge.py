"""Judging with a model: the pairwise prompt that asks which of two replies is better, the parser of its verdict
("[[A]]", "[[B]]" or "[[C]]" for a tie, as in MT-Bench's pairwise judge), the two kinds of judge (a herd-loadable
model, or a model behind an OpenAI-compatible endpoint through the `openai` client), and how every judge-based rate
is shown when the judge's answers are mostly unreadable (no result, never 0%).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Literal

from herd.errors import HerdError
from herd.eval.generate_until import generate_until
from herd.model import Transformer
from herd.tokenizer import Tokenizer

Verdict = Literal["A", "B", "tie"]
Judge = Callable[[Sequence[str]], list[str]]
"""Judge prompts in, the judge's replies out (one each, in order)."""

JUDGE_TEMPLATE = """You are an impartial judge. Two AI assistants, A and B, replied to the same user prompt. Decide \
which reply serves the user better: follows the instructions, is correct, relevant, clear and complete. The order in \
which the replies are shown says nothing about their quality, and a longer reply is not better for being longer.

Explain your decision in a few sentences, then end with your verdict in exactly this form: "[[A]]" if reply A is \
better, "[[B]]" if reply B is better, "[[C]]" if they are equally good.

[User prompt]
{prompt}

[Reply A]
{reply_a}
[End of reply A]

[Reply B]
{reply_b}
[End of reply B]"""

_VERDICT = re.compile(r"\[\[([ABC])\]\]")


def judge_prompt(prompt: str, reply_a: str, reply_b: str) -> str:
    return JUDGE_TEMPLATE.format(prompt=prompt, reply_a=reply_a, reply_b=reply_b)


def parse_verdict(text: str) -> Verdict | None:
    """"A", "B" or "tie" from the judge's reply; None when it gives no verdict or contradicts itself."""
    found = set(_VERDICT.findall(text))
    if len(found) != 1:
        return None
    return {"A": "A", "B": "B", "C": "tie"}[found.pop()]


def mostly_unreadable(unreadable: int, judged: int) -> bool:
    """True when more than half of the judge's answers could not be read: a rate over them is no result."""
    return 2 * unreadable > judged


def shown_rate(rate: float | None, unreadable: int, judged: int) -> str:
    """A judge-based rate for a report: a percentage, or "no result (judge unreadable: k/n)" when most of the
    judge's answers were unreadable ("-" when nothing was judged and no rate exists)."""
    if mostly_unreadable(unreadable, judged):
        return f"no result (judge unreadable: {unreadable}/{judged})"
    return "-" if rate is None else f"{rate:.1%}"


def chat_replies(
    model: Transformer, tok: Tokenizer, prompts: Sequence[str], *, max_new_tokens: int, batch_size: int = 8
) -> list[str]:
    """Greedy replies of a chat model, each prompt a single user turn; a reply ends with the turn."""
    dialogs = [tok.encode_dialog([{"role": "user", "content": prompt}]) for prompt in prompts]
    return generate_until(model, tok, dialogs, max_gen_toks=max_new_tokens, batch_size=batch_size)


def herd_judge(model: Transformer, tok: Tokenizer, *, max_new_tokens: int = 512, batch_size: int = 8) -> Judge:
    """A judge run by herd on a loaded model."""
    return lambda prompts: chat_replies(model, tok, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)


def openai_judge(model: str, base_url: str, *, api_key: str, max_new_tokens: int = 512) -> Judge:
    """A judge behind an OpenAI-compatible chat-completions endpoint (greedy: temperature 0)."""
    try:
        import openai
    except ImportError:
        raise HerdError("a judge behind --judge-url needs the openai client: pip install openai") from None
    client = openai.OpenAI(base_url=base_url, api_key=api_key)

    def judge(prompts: Sequence[str]) -> list[str]:
        replies = []
        for prompt in prompts:
            try:
                response = client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": prompt}], temperature=0.0,
                    max_tokens=max_new_tokens,
                )
            except openai.OpenAIError as error:
                raise HerdError(f"the judge at {base_url} failed: {error}") from None
            replies.append(response.choices[0].message.content or "")
        return replies

    return judge
