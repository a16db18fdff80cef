"""Teachers that label documents for classifier training: a language model judging a quality prompt (Llama 3 used
Llama 2), or the heuristic filters as a rule-based teacher (the fallback, and what tests use).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from herd.data.document import Document
from herd.data.quality import C4Quality, GopherQuality, GopherRepetition
from herd.data.stage import DocumentStage

QUALITY_PROMPT = (
    "Below is an extract from a web page. Judge whether it has high educational value: it is well written, "
    "coherent and informative, and could be useful in teaching, not an advertisement, a list of links or "
    "boilerplate.\n\nExtract:\n{text}\n\nQuestion: Is this text educational and of high quality? Answer yes or no."
    "\nAnswer:"
)


class Teacher(Protocol):
    """Anything that labels a batch of texts (any callable of this shape is a teacher)."""

    def __call__(self, texts: Sequence[str]) -> list[str]: ...


@dataclass
class RuleTeacher:
    """Labels `good` the texts that every one of `rules` keeps (default: Gopher quality and repetition, C4), else
    `bad`: the heuristic filters as a teacher, for tests and when no model is at hand."""

    rules: list[DocumentStage] = field(default_factory=lambda: [GopherQuality(), GopherRepetition(), C4Quality()])

    def __call__(self, texts: Sequence[str]) -> list[str]:
        return ["good" if all(r.apply(Document(text=t, id="")) is None for r in self.rules) else "bad" for t in texts]


@dataclass
class PromptTeacher:
    """A causal language model judging `prompt` (with `{text}`): `good` when it gives " yes" more probability than
    " no" as the next token. `model` maps LongTensor[1, T] to logits [1, T, vocab] (a herd model from
    `herd.load`); `tokenizer` has `encode(text, bos=, eos=)` (herd's or a wrapper around another)."""

    model: Callable[[Any], Any]
    tokenizer: Any
    prompt: str = QUALITY_PROMPT
    max_chars: int = 4000
    """Longer texts are cut to this many characters before they go into the prompt."""
    margin: float = 0.0
    """Label `good` when log p(yes) - log p(no) exceeds this."""

    def margins(self, texts: Sequence[str]) -> list[float]:
        """log p(" yes") - log p(" no") for each text."""
        import torch

        yes = self.tokenizer.encode(" yes", bos=False, eos=False)[0]
        no = self.tokenizer.encode(" no", bos=False, eos=False)[0]
        out = []
        with torch.no_grad():
            for text in texts:
                ids = self.tokenizer.encode(self.prompt.format(text=text[: self.max_chars]), bos=True, eos=False)
                logits = self.model(torch.tensor([ids]))[0, -1].float()
                out.append(float(logits[yes] - logits[no]))  # the log-softmax normaliser cancels
        return out

    def __call__(self, texts: Sequence[str]) -> list[str]:
        return ["good" if m > self.margin else "bad" for m in self.margins(texts)]
