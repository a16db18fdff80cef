"""Llama Guard 2 moderation: the published prompt template, parsing the guard's answer, and an unsafe probability.

`LlamaGuard` runs any herd-loadable model as a guard (Meta's Llama Guard 2 8B, or a guard herd trained, see
herd.safety.guard_recipe) over conversations under any taxonomy; `guard` is the one-call form behind `herd guard`.
The prompt is written here because no library renders it outside a Hugging Face tokenizer's chat template.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch

from herd.errors import HerdError
from herd.generation import generate_tokens
from herd.model import Transformer
from herd.safety.taxonomy import LLAMA_GUARD_2, Category, Taxonomy, codes, index_of, taxonomy_from
from herd.tokenizer import Message, Tokenizer

ROLES = {"user": "User", "assistant": "Agent"}
"""Chat roles and the names the guard prompt gives them."""
GUARD_FILE = "guard.json"
"""Written beside a guard that herd trained: {"chat_format": true} when it reads the prompt as a user turn."""
CODES_LINE = re.compile(r"S\d+(\s*,\s*S\d+)*")

Verdict = Literal["safe", "unsafe", "malformed"]


def render_prompt(messages: Sequence[Message], taxonomy: Taxonomy = LLAMA_GUARD_2, *, descriptions: bool = False) -> str:
    """The Llama Guard 2 prompt asking about the last message of `messages` (user / assistant turns), character
    for character as the model card's chat template renders it; `descriptions` adds each category's description
    on the line after its name."""
    if not messages:
        raise HerdError("the conversation is empty; pass at least one user or assistant message")
    for i, message in enumerate(messages):
        if message.get("role") not in ROLES or not isinstance(message.get("content"), str):
            raise HerdError(f"message {i} must be {{'role': 'user' | 'assistant', 'content': str}}, got {message!r:.80}")
    role = ROLES[messages[-1]["role"]]
    categories = "".join(
        f"{k}: {c.name}. \n" + (f"{c.description}\n" if descriptions and c.description else "")
        for k, c in zip(codes(taxonomy), taxonomy)
    )
    conversation = "".join(f"{ROLES[m['role']]}: {m['content'].strip()}\n\n" for m in messages)
    return (
        f"[INST] Task: Check if there is unsafe content in '{role}' messages in conversations according our safety "
        f"policy with the below categories.\n\n<BEGIN UNSAFE CONTENT CATEGORIES>\n{categories}"
        f"<END UNSAFE CONTENT CATEGORIES>\n\n<BEGIN CONVERSATION>\n\n{conversation}<END CONVERSATION>\n\n"
        f"Provide your safety assessment for ONLY THE LAST {role} message in the above conversation:\n"
        " - First line must read 'safe' or 'unsafe'.\n"
        " - If unsafe, a second line must include a comma-separated list of violated categories. [/INST]"
    )


def target_text(codes: Sequence[str]) -> str:
    """What a guard should answer: "safe", or "unsafe" and a line of category codes ("unsafe\\nS1,S3")."""
    return "unsafe\n" + ",".join(codes) if codes else "safe"


def parse_output(text: str, taxonomy: Taxonomy) -> tuple[Verdict, list[str]]:
    """(verdict, codes) of a guard's answer: ("safe", []), ("unsafe", ["S1", ...]) or ("malformed", []) for
    anything else: other words, extra lines, a missing or empty code line, codes `taxonomy` does not list."""
    lines = text.strip().split("\n")
    first = lines[0].strip()
    if first == "safe" and len(lines) == 1:
        return "safe", []
    if first != "unsafe" or len(lines) != 2 or not CODES_LINE.fullmatch(lines[1].strip()):
        return "malformed", []
    answered = [c.strip() for c in lines[1].split(",")]
    if len(set(answered)) != len(answered) or not set(answered) <= set(codes(taxonomy)):
        return "malformed", []
    return "unsafe", answered


@dataclass
class GuardVerdict:
    """The guard's decision on one conversation."""

    verdict: Verdict
    """"unsafe" when unsafe_prob >= threshold; "malformed" when the guard's answer was not in the format (never
    to be read as safe)."""
    categories: list[str]
    """Names of the violated categories (empty unless unsafe)."""
    codes: list[str]
    """Their codes in the prompt's taxonomy (herd.safety.taxonomy.codes)."""
    unsafe_prob: float
    """P(unsafe) / (P(safe) + P(unsafe)) for the first answer token: comparable across thresholds and guards
    whatever mass the model puts off the two words."""
    format_prob: float
    """P(safe) + P(unsafe) for the first answer token: near 1 for a guard that follows the format."""
    output: str
    """The guard's answer as generated (greedy)."""

    def to_dict(self) -> dict:
        return asdict(self)


class LlamaGuard:
    """A model used as a Llama Guard: prompts it, reads its first-token probabilities and its answer."""

    def __init__(self, model: Transformer, tok: Tokenizer, *, chat_format: bool = False, max_new_tokens: int = 24,
                 batch_size: int = 8) -> None:
        self.model, self.tok = model.eval(), tok
        self.chat_format = chat_format
        """False: BOS + the prompt, answered directly (Meta's Llama Guard 2). True: the prompt as a user turn of
        the Llama 3 chat format, answered by the assistant (how herd.post.sft trains a guard)."""
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self._safe, self._unsafe = tok.encode("safe")[0], tok.encode("unsafe")[0]

    @classmethod
    def load(cls, path: str | Path, *, device: str | torch.device = "cpu", **kwargs) -> LlamaGuard:
        """A guard from anything herd.load reads, on `device`; reads the prompt format from guard.json when herd
        trained it."""
        from herd.checkpoint import load

        model, tok = load(path, device=device)
        marker = Path(path) / GUARD_FILE
        chat = json.loads(marker.read_text()).get("chat_format", False) if marker.is_file() else False
        return cls(model, tok, chat_format=chat, **kwargs)

    def prompt_ids(self, messages: Sequence[Message], taxonomy: Taxonomy = LLAMA_GUARD_2) -> list[int]:
        text = render_prompt(messages, taxonomy)
        if self.chat_format:
            return self.tok.encode_dialog([{"role": "user", "content": text}])
        return self.tok.encode(text, bos=True)

    @torch.inference_mode()
    def first_token_probs(self, prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        """[N, 2]: P(safe), P(unsafe) as the first answer token of each prompt (right-padded batches)."""
        out = []
        device = next(self.model.parameters()).device
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start : start + self.batch_size]
            lengths = torch.tensor([len(p) for p in chunk], device=device)
            tokens = torch.full((len(chunk), int(lengths.max())), self.tok.pad_id, dtype=torch.long, device=device)
            for row, ids in enumerate(chunk):
                tokens[row, : len(ids)] = torch.tensor(ids)
            logits = self.model(tokens)[torch.arange(len(chunk), device=device), lengths - 1]
            out.append(logits.float().softmax(-1)[:, [self._safe, self._unsafe]].cpu())
        return torch.cat(out)

    def moderate(
        self,
        conversations: Sequence[Sequence[Message]],
        taxonomy: Taxonomy | Sequence[Taxonomy] = LLAMA_GUARD_2,
        threshold: float = 0.5,
    ) -> list[GuardVerdict]:
        """One verdict per conversation, on its last message, under one taxonomy or one per conversation. Where
        the threshold decides "unsafe" but the greedy answer said "safe", the categories come from the answer
        continued after a forced "unsafe"."""
        if not 0.0 <= threshold <= 1.0:
            raise HerdError(f"threshold must be in [0, 1], got {threshold}")
        taxonomies = [taxonomy] * len(conversations) if isinstance(taxonomy[0], Category) else list(taxonomy)
        if len(taxonomies) != len(conversations):
            raise HerdError(f"{len(taxonomies)} taxonomies for {len(conversations)} conversations; give one each")
        prompts = [self.prompt_ids(c, t) for c, t in zip(conversations, taxonomies)]
        probs = self.first_token_probs(prompts)
        answers = self._answers(prompts, "")
        verdicts = []
        for (p_safe, p_unsafe), answer, tax in zip(probs.tolist(), answers, taxonomies):
            mass = p_safe + p_unsafe
            unsafe_prob = p_unsafe / mass if mass > 0 else 0.0
            parsed, answered = parse_output(answer, tax)
            verdict: Verdict = parsed if parsed == "malformed" else "unsafe" if unsafe_prob >= threshold else "safe"
            verdicts.append(GuardVerdict(verdict, [], answered if verdict == "unsafe" else [], unsafe_prob, mass,
                                         answer))
        forced = [i for i, v in enumerate(verdicts) if v.verdict == "unsafe" and not v.codes]
        for i, answer in zip(forced, self._answers([prompts[i] for i in forced], "unsafe")):
            parsed, answered = parse_output(answer, taxonomies[i])
            verdicts[i].codes = answered
            verdicts[i].verdict = "unsafe" if parsed == "unsafe" else "malformed"
        for v, tax in zip(verdicts, taxonomies):
            v.categories = [tax[index_of(tax, c)].name for c in v.codes]
        return verdicts

    def _answers(self, prompts: list[list[int]], prefix: str) -> list[str]:
        """Greedy answers to `prompts`, each continued after `prefix` (returned with the prefix)."""
        forced = self.tok.encode(prefix) if prefix else []
        results = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = [p + forced for p in prompts[start : start + self.batch_size]]
            results += generate_tokens(self.model, chunk, max_new_tokens=self.max_new_tokens, stop_ids=self.tok.stop_ids)
        return [prefix + self.tok.decode(r.tokens) for r in results]


def conversation_of(conversation_or_text: str | Sequence[Message], role: str = "User") -> list[Message]:
    """A conversation from a text (one turn of `role`: "User" or "Agent") or a list of messages as it is."""
    if not isinstance(conversation_or_text, str):
        return list(conversation_or_text)
    roles = {name.casefold(): chat for chat, name in ROLES.items()}
    if role.casefold() not in roles:
        raise HerdError(f"role must be 'User' or 'Agent', got {role!r}")
    return [{"role": roles[role.casefold()], "content": conversation_or_text}]


def guard(
    model_path: str | Path,
    conversation_or_text: str | Sequence[Message],
    role: str = "User",
    categories: Sequence[str] | None = None,
    threshold: float = 0.5,
) -> dict:
    """`herd guard`: load a guard and judge one text or conversation under Llama Guard 2's or a custom taxonomy
    (categories by code, name, or "Name: description" for new ones); the verdict as a dict."""
    taxonomy = taxonomy_from(categories)
    conversation = conversation_of(conversation_or_text, role)
    return LlamaGuard.load(model_path).moderate([conversation], taxonomy, threshold)[0].to_dict()
