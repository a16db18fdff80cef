"""`herd guard train`: a Llama Guard fine-tuned from any checkpoint herd.load reads (as Meta made Llama Guard 2 from
Llama 3 8B), by herd's SFT stage on the Llama Guard 2 prompt, and scored on held-out wordings.

The data is herd's moderation set (herd.safety.moderation_set) plus a user's labelled JSONL, each example under
Llama Guard 2's taxonomy or under one drawn for it from the categories seen (guard_recipe.sample_taxonomy), so the
guard learns to answer `safe` for categories a custom taxonomy leaves out and to flag categories it adds.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from herd.errors import HerdError
from herd.post.sft import SFTConfig
from herd.run_dir import write_json
from herd.safety.guard_metrics import headline
from herd.safety.guard_recipe import (
    EXTRA_CATEGORIES,
    Example,
    evaluate_guard,
    sample_taxonomy,
    train_guard,
    write_sft_data,
)
from herd.safety.llama_guard import ROLES, LlamaGuard
from herd.safety.moderation_set import moderation_examples
from herd.safety.taxonomy import LLAMA_GUARD_2, Category, Taxonomy, check_taxonomy, index_of


def guard_sft() -> SFTConfig:
    """The SFT settings a guard starts from: short rows (one guard prompt is ~100-300 tokens), AdamW at 3e-4, and
    the prompts of a row sharing one copy of the category header they begin with (SFTConfig.share_prefixes:
    about 1.8x the examples per token on herd's moderation set, exact)."""
    config = SFTConfig(data="<written by herd guard train>", steps=500, batch_size=16, seq_len=512,
                       checkpoint_interval=0, share_prefixes=True)
    config.optim.lr, config.optim.warmup_steps = 3e-4, 20
    return config


@dataclass
class GuardTrainConfig:
    """A guard fine-tuned from `base`: what it learns from, how its prompts draw taxonomies, how it is trained."""

    base: str = ""
    """The starting model: anything herd.load reads (a herd / HF / Meta directory, e.g. Llama 3 8B or Llama Guard 2)."""
    out_dir: str = "runs/guard"
    """Run directory: guard_sft.jsonl, the SFT run, the guard in model/, guard_eval.json."""
    data: str | None = None
    """A JSONL of labelled messages added to the generated ones: {"text": ..., "category": a Llama Guard 2 name or
    code, a new category's name, or null for safe, "role": "user" | "assistant" (default user), "context": earlier
    [{"role", "content"}] turns (optional)}."""
    examples: int = 4000
    """Generated moderation examples (herd.safety.moderation_set); 0 trains on `data` alone."""
    noise: float = 0.15
    """Filler-word rewording rate of the generated training examples (guard_recipe.add_noise)."""
    full_taxonomy_share: float = 0.5
    """Share of examples prompted with Llama Guard 2's own 11 categories; the rest get a taxonomy drawn for them."""
    max_categories: int = 4
    """Most categories in a drawn taxonomy."""
    listed_share: float = 0.6
    """Chance that a drawn taxonomy lists the example's own category (else the example is safe under it)."""
    held_out: int = 200
    """Held-out examples scored after training, in wordings training never shows; 0 skips the scoring."""
    seed: int = 0
    """Seeds the generated data, the drawn taxonomies and the SFT run."""
    sft: SFTConfig = field(default_factory=guard_sft)
    """herd's SFT stage settings (steps, batch_size, optim.lr, lora.rank, device, ...); its model, data and out_dir
    are set from base and out_dir."""

    def __post_init__(self) -> None:
        if not self.base:
            raise HerdError("base is empty; set base=<a checkpoint herd.load reads, or a preset>")
        if self.examples < 0 or self.held_out < 0:
            raise HerdError(f"examples and held_out must be 0 or more, got {self.examples} and {self.held_out}")
        if not self.examples and not self.data:
            raise HerdError("nothing to train on: examples=0 and no data; set examples > 0 or data=<JSONL>")
        if not 0 <= self.full_taxonomy_share <= 1 or not 0 <= self.listed_share <= 1:
            raise HerdError("full_taxonomy_share and listed_share are probabilities in [0, 1]")
        if self.max_categories < 1:
            raise HerdError(f"max_categories must be at least 1, got {self.max_categories}")


def read_labelled(path: str | Path) -> list[Example]:
    """The labelled messages of a user's JSONL (see GuardTrainConfig.data); a HerdError naming the line otherwise."""
    path = Path(path)
    if not path.is_file():
        raise HerdError(f"guard data not found: {path}")
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise HerdError(f"{where}: not JSON ({e.msg}); write one JSON object per line") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str) or not record["text"].strip():
            raise HerdError(f'{where}: needs {{"text": "...", "category": name or null}}, got {line[:80]!r}')
        category, role, context = record.get("category"), record.get("role", "user"), record.get("context", [])
        if category is not None and (not isinstance(category, str) or not category.strip()):
            raise HerdError(f"{where}: category must be a category's name or code, or null for safe")
        if role not in ROLES or not isinstance(context, list) or any(
                not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str)
                for m in context):
            raise HerdError(f'{where}: role must be "user" or "assistant" and context a list of '
                            '{"role": "user" | "assistant", "content": str}')
        out.append(Example(record["text"], _category_name(category), role,
                           tuple((m["role"], m["content"]) for m in context)))
    if not out:
        raise HerdError(f"{path} holds no examples")
    return out


def _category_name(category: str | None) -> str | None:
    """A Llama Guard 2 category's own name for its code or name (any case); any other name as written."""
    if category is None:
        return None
    try:
        return LLAMA_GUARD_2[index_of(LLAMA_GUARD_2, category)].name
    except HerdError:
        return category.strip()


def universe_of(examples: Sequence[Example]) -> Taxonomy:
    """Every category a guard trained on `examples` meets: Llama Guard 2's, the recipe's custom ones, the data's."""
    known = LLAMA_GUARD_2 + EXTRA_CATEGORIES
    names = {c.name for c in known}
    new = sorted({e.category for e in examples if e.category is not None} - names)
    return check_taxonomy(known + tuple(Category(name) for name in new))


def moderation_records(examples: Sequence[Example], universe: Taxonomy, config: GuardTrainConfig,
                       seed: int) -> list[tuple[Example, Taxonomy]]:
    """Each example under Llama Guard 2's taxonomy (share full_taxonomy_share) or one drawn from `universe`."""
    rng = random.Random(seed)
    return [(e, LLAMA_GUARD_2 if rng.random() < config.full_taxonomy_share else
             sample_taxonomy(universe, e, rng, config.max_categories, config.listed_share)) for e in examples]


def guard_sft_data(config: GuardTrainConfig) -> Path:
    """Write the guard's SFT records (out_dir/guard_sft.jsonl): prompt as the user turn, verdict as the reply."""
    examples = moderation_examples(config.examples, seed=config.seed, noise=config.noise)
    if config.data:
        examples += read_labelled(config.data)
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = moderation_records(examples, universe_of(examples), config, config.seed)
    random.Random(config.seed).shuffle(records)
    return write_sft_data(records, out / "guard_sft.jsonl")


def held_out_scores(guard: LlamaGuard, config: GuardTrainConfig) -> dict[str, Any]:
    """guard_metrics scores on `held_out` new-wording examples: under Llama Guard 2's taxonomy, and under
    taxonomies drawn from the recipe's categories (custom lists: categories left out must be answered safe)."""
    examples = moderation_examples(config.held_out, held_out=True, seed=config.seed + 1)
    custom = replace(config, full_taxonomy_share=0.0)
    return {"llama_guard_2": evaluate_guard(guard, [(e, LLAMA_GUARD_2) for e in examples]),
            "custom_taxonomies": evaluate_guard(guard, moderation_records(examples, universe_of(examples), custom,
                                                                          config.seed + 1))}


def score_guard(model: str | Path, data: str | Path | None = None, held_out: int = 200, seed: int = 0,
                taxonomy: Taxonomy = LLAMA_GUARD_2) -> dict[str, Any]:
    """`herd guard eval`: a guard's scores on a labelled JSONL (see GuardTrainConfig.data) under `taxonomy`, or
    without one on herd's held-out moderation set (held_out_scores)."""
    guard = LlamaGuard.load(model)
    if data is None:
        return held_out_scores(guard, GuardTrainConfig(base=str(model), held_out=held_out, seed=seed))
    return {Path(data).name: evaluate_guard(guard, [(e, taxonomy) for e in read_labelled(data)])}


def train_guard_from_base(config: GuardTrainConfig) -> dict[str, Any]:
    """Fine-tune config.base into a guard (out_dir/model, loadable by LlamaGuard.load and `herd serve --guard`)
    and score it on held-out wordings (out_dir/guard_eval.json); the guard's path and its scores."""
    data = guard_sft_data(config)
    sft = replace(config.sft, model=config.base, data=str(data), out_dir=config.out_dir, seed=config.seed)
    model_dir = train_guard(sft)
    result: dict[str, Any] = {"guard": str(model_dir)}
    if config.held_out:
        result["held_out"] = held_out_scores(LlamaGuard.load(model_dir), config)
        write_json(Path(config.out_dir) / "guard_eval.json", result, indent=1)
    return result


def summary(scores: dict[str, dict[str, Any]]) -> list[str]:
    """One line per scored set for a person: its name and guard_metrics.headline."""
    return [f"{name.replace('_', ' ')}: {headline(metrics)}" for name, metrics in scores.items()]
