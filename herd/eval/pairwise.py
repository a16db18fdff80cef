"""Human-preference style evaluation behind `herd eval-pairwise`: two models answer prompts in the 12 use-case
categories of the Llama 3 release's human evaluation, a judge compares every pair of replies in both orders, and
win / tie / loss rates of model A against model B come out overall and per category (pairwise.json, pairwise.md).

A pair is a win (loss) only when the judge prefers A (B) in both orders; a verdict that changes with the order
is a tie, as in MT-Bench, so a judge's position bias cancels. A pair with an unreadable verdict is "invalid" and
left out of the rates; when more than half of the pairs are invalid there are no rates (null in pairwise.json,
"no result (judge unreadable: k/n)" in pairwise.md).
"""

from __future__ import annotations

import gc
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from herd.errors import HerdError
from herd.eval.judge import (
    Judge,
    Verdict,
    chat_replies,
    herd_judge,
    judge_prompt,
    mostly_unreadable,
    openai_judge,
    parse_verdict,
    shown_rate,
)
from herd.run_dir import write_text

CATEGORIES = (
    "advice", "brainstorming", "classification", "closed_qa", "coding", "creative_writing", "extraction",
    "persona", "open_qa", "reasoning", "rewriting", "summarization",
)
"""The release's categories: asking for advice, brainstorming, classification, closed question answering, coding,
creative writing, extraction, inhabiting a character / persona, open question answering, reasoning, rewriting,
summarization."""

Outcome = Literal["win", "tie", "loss"]


@dataclass(frozen=True)
class PreferencePrompt:
    id: str
    category: str
    prompt: str


def load_prompts(path: str | Path | None = None, *, per_category: int | None = None) -> list[PreferencePrompt]:
    """The JSONL prompt set ({"id", "category", "prompt"} per line; default: the one shipped with herd), at most
    `per_category` of each category."""
    if path is None:
        text = resources.files("herd.eval").joinpath("prompts/human_preference.jsonl").read_text(encoding="utf-8")
    elif not Path(path).is_file():
        raise HerdError(f"no prompt file {path}: pass a JSONL file with id, category and prompt on each line")
    else:
        text = Path(path).read_text(encoding="utf-8")
    label = path or "the prompt set"
    prompts, seen = [], {c: 0 for c in CATEGORIES}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            item = PreferencePrompt(str(row["id"]), row["category"], row["prompt"])
        except (ValueError, KeyError, TypeError):
            raise HerdError(f"{label} line {number}: expected JSON with id, category and prompt") from None
        if item.category not in seen:
            raise HerdError(f"{label} line {number}: unknown category {item.category!r}; use one of {', '.join(CATEGORIES)}")
        seen[item.category] += 1
        if per_category is None or seen[item.category] <= per_category:
            prompts.append(item)
    if not prompts:
        raise HerdError(f"{label} holds no prompts")
    return prompts


def outcome(a_first: Verdict | None, b_first: Verdict | None) -> Outcome | None:
    """Model A's result from the verdict with A shown first and the verdict with B shown first; None if either
    is unreadable."""
    if a_first is None or b_first is None:
        return None
    b_first = {"A": "B", "B": "A", "tie": "tie"}[b_first]  # back to "which model", not "which position"
    if a_first == b_first:
        return {"A": "win", "B": "loss", "tie": "tie"}[a_first]
    return "tie"


def compare(
    prompts: Sequence[PreferencePrompt], replies_a: Sequence[str], replies_b: Sequence[str], judge: Judge
) -> list[dict[str, Any]]:
    """One record per prompt: both replies, the judge's two outputs and verdicts, and model A's outcome."""
    questions = [judge_prompt(p.prompt, a, b) for p, a, b in zip(prompts, replies_a, replies_b, strict=True)]
    questions += [judge_prompt(p.prompt, b, a) for p, a, b in zip(prompts, replies_a, replies_b, strict=True)]
    judged = judge(questions)
    if len(judged) != len(questions):
        raise HerdError(f"the judge returned {len(judged)} replies for {len(questions)} prompts")
    records = []
    for i, (item, a, b) in enumerate(zip(prompts, replies_a, replies_b, strict=True)):
        first, second = judged[i], judged[len(prompts) + i]
        verdicts = parse_verdict(first), parse_verdict(second)
        records.append({
            **asdict(item), "reply_a": a, "reply_b": b, "judge_a_first": first, "judge_b_first": second,
            "verdict_a_first": verdicts[0], "verdict_b_first": verdicts[1], "outcome": outcome(*verdicts),
        })
    return records


def rates(outcomes: Sequence[Outcome | None]) -> dict[str, float | int | None]:
    """Counts, and win / tie / loss rates over the readable pairs (None when there are none, or when more than
    half of the pairs are unreadable)."""
    valid = [o for o in outcomes if o is not None]
    result: dict[str, float | int | None] = {"n": len(outcomes), "invalid": len(outcomes) - len(valid)}
    readable = valid and not mostly_unreadable(len(outcomes) - len(valid), len(outcomes))
    for name in ("win", "tie", "loss"):
        result[name] = valid.count(name) / len(valid) if readable else None
    return result


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """{"overall": rates, "categories": {category: rates}} in the release's category order."""
    categories = {
        c: rates([r["outcome"] for r in records if r["category"] == c])
        for c in CATEGORIES if any(r["category"] == c for r in records)
    }
    return {"overall": rates([r["outcome"] for r in records]), "categories": categories}


def markdown_table(summary: dict[str, Any], model_a: str, model_b: str, judge: str) -> str:
    """| category | pairs | win | tie | loss | invalid | for model A against model B; a row whose pairs are mostly
    unreadable says "no result (judge unreadable: k/n)"."""
    lines = [
        f"{model_a} (A) vs {model_b} (B), judged by {judge} in both orders", "",
        "| Category | Pairs | Win | Tie | Loss | Invalid |", "|---|---|---|---|---|---|",
    ]
    for name, r in [*summary["categories"].items(), ("**overall**", summary["overall"])]:
        cells = [name, str(r["n"]), *(shown_rate(r[k], r["invalid"], r["n"]) for k in ("win", "tie", "loss")),
                 str(r["invalid"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_pairwise(
    model_a: str,
    model_b: str,
    judge: str,
    *,
    judge_url: str | None = None,
    judge_api_key: str = "EMPTY",
    prompts_path: str | Path | None = None,
    per_category: int | None = None,
    max_new_tokens: int = 512,
    judge_max_new_tokens: int = 512,
    batch_size: int = 8,
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Replies of `model_a` and `model_b` (anything herd.load takes), judged by `judge`: a herd-loadable model,
    or with `judge_url` a model name on that OpenAI-compatible endpoint. Returns the summary; writes
    pairwise.json (config, summary, records) and pairwise.md under `out_dir` when given."""
    from herd.checkpoint import load

    prompts = load_prompts(prompts_path, per_category=per_category)
    judge_fn = openai_judge(judge, judge_url, api_key=judge_api_key, max_new_tokens=judge_max_new_tokens) if judge_url else None
    replies = []
    for name in (model_a, model_b):  # one model in memory at a time
        model, tok = load(name)
        replies.append(chat_replies(model.eval(), tok, [p.prompt for p in prompts], max_new_tokens=max_new_tokens,
                                    batch_size=batch_size))
        del model
        gc.collect()
    if judge_fn is None:
        model, tok = load(judge)
        judge_fn = herd_judge(model.eval(), tok, max_new_tokens=judge_max_new_tokens, batch_size=batch_size)
    records = compare(prompts, replies[0], replies[1], judge_fn)
    summary = summarize(records)
    if out_dir is not None:
        out = Path(out_dir)
        config = {"model_a": model_a, "model_b": model_b, "judge": judge, "judge_url": judge_url,
                  "max_new_tokens": max_new_tokens, "judge_max_new_tokens": judge_max_new_tokens}
        body = {"config": config, "summary": summary, "records": records}
        write_text(out / "pairwise.json", json.dumps(body, indent=2, ensure_ascii=False) + "\n")
        write_text(out / "pairwise.md", markdown_table(summary, model_a, model_b, judge))
    return summary
