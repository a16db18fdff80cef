"""The embedded default corpus of `herd speedrun`: generated from a seed, no network, no downloads.

`generate_corpus(out_dir, size="tiny", seed=0)` writes (the same bytes for the same size and seed):

- `raw/{web,math,multilingual,code}/*.jsonl`: pretraining text with planted noise, records {"text", "metadata": {"domain",
  "planted"?}}, one directory per domain pipeline (Llama 3 cleans code and math with their own pipelines):
  - general: encyclopedic articles about an invented world (countries with capitals, languages, currencies,
    national animals; people with professions and birth years), several phrasings each, plus trivia pages
    (question/answer form) about half of the countries;
  - math (`raw/math`, with planted exact and near duplicates): word problems with digit-by-digit worked solutions ending in `#### N`, and addition drills;
  - multilingual (`raw/multilingual`, with planted duplicates): sentences about the same world in French, German, Spanish and Italian;
  - planted noise: exact duplicates, near duplicates (a few words dropped/doubled), boilerplate-wrapped pages
    (navigation, cookie banner, footer with an e-mail address and phone number), character soup, repeated lines
    and keyword spam; `metadata.planted` names the kind.
- `raw/code/code.jsonl`: chunks of this interpreter's own standard-library source, and generated small functions
  (docstring, body, asserts), with planted exact duplicates.
- `post/sft.jsonl`, `post/sft_val.jsonl`: chat dialogs {"messages"} (math with worked solutions, knowledge
  about the trivia-visible countries, code completion, multilingual questions);
  `post/prefs.jsonl`, `post/prefs_val.jsonl`: {"prompt", "chosen", "rejected"} (a correct worked reply beats a wrong
  number, a wrong fact or a non-answer); `post/prompts.jsonl`: prompts for rejection sampling.
- `eval/knowledge.jsonl` (4-way multiple choice on the countries never quizzed: their facts appear only in
  articles), `eval/math.jsonl` (held-out word problems, gold `#### N`), `eval/code.jsonl` (held-out functions with
  asserts run in the sandbox), `eval/addition.jsonl` ("What is a + b?" for 2-digit a, b never asked in SFT or
  preference data): the data of the speedrun's synthetic benchmarks.
- `manifest.json`: sizes, document counts per domain and planted-noise counts.

Sizes: `micro` (~0.5 MB, for tests), `tiny` (~4 MB), `small` (~25 MB, for the GPU presets).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from herd.corpus.chat import preference_pair, sft_dialog
from herd.corpus.code import DISTINCT_FUNCTIONS, function_document, make_function, stdlib_documents
from herd.corpus.general import general_documents, knowledge_questions
from herd.corpus.math import addition_question, arithmetic_table, make_problem, math_document
from herd.corpus.multilingual import TEMPLATES, multilingual_document
from herd.corpus.names import make_world
from herd.corpus.noise import plant_noise
from herd.errors import HerdError
from herd.run_dir import atomic_open, write_json


@dataclass(frozen=True)
class CorpusSize:
    countries: int
    articles_per_country: int
    math_docs: int
    drill_docs: int
    function_docs: int
    stdlib_chars: int
    multilingual_docs: int
    sft: int
    prefs: int
    prompts: int
    eval_items: int


SIZES = {
    "micro": CorpusSize(40, 2, 120, 20, 60, 60_000, 20, 300, 150, 16, 24),
    "tiny": CorpusSize(240, 3, 2600, 400, 900, 700_000, 200, 3000, 800, 96, 60),
    "small": CorpusSize(1500, 4, 20000, 3000, 6000, 4_000_000, 1500, 20000, 5000, 256, 200),
}
NOISE = {"dup": 0.08, "near": 0.05, "boiler": 0.06, "junk": 0.04}


def generate_corpus(out_dir: str | Path, size: str = "tiny", seed: int = 0) -> dict[str, Any]:
    """Write the corpus of `size` to `out_dir` (see the module docstring); returns its manifest."""
    if size not in SIZES:
        raise HerdError(f"unknown corpus size {size!r}; choose from: {', '.join(SIZES)}")
    s, out = SIZES[size], Path(out_dir)
    rng = random.Random(seed)
    world = make_world(rng, s.countries)
    web: list[dict] = [_rec(t, "general") for t in general_documents(world, rng, s.articles_per_country)]
    langs = tuple(TEMPLATES)
    multi = [_rec(multilingual_document(rng.sample(world.countries, min(6, s.countries)), langs[i % len(langs)], rng),
                 "multilingual") for i in range(s.multilingual_docs)]
    web = plant_noise(web, rng, **NOISE)
    math = [_rec(math_document(rng), "math") for _ in range(s.math_docs)]
    math += [_rec(arithmetic_table(rng), "math") for _ in range(s.drill_docs)]
    multi = plant_noise(multi, rng, dup=0.05, near=0.03, boiler=0.0, junk=0.0)
    math = plant_noise(math, rng, dup=0.05, near=0.03, boiler=0.0, junk=0.0)
    code = [_rec(t, "code") for t in stdlib_documents(rng, s.stdlib_chars)]
    code += [_rec(function_document(rng), "code") for _ in range(s.function_docs)]
    code = plant_noise(code, rng, dup=0.05, near=0.0, boiler=0.0, junk=0.0)

    visible = world.countries[: s.countries // 2]
    dialogs = [sft_dialog(rng, visible) for _ in range(s.sft + s.sft // 10)]
    prefs = [preference_pair(rng, visible) for _ in range(s.prefs + s.prefs // 10)]
    prompts = [{"prompt": make_problem(rng).question} for _ in range(s.prompts)]
    seen = {d["messages"][0]["content"] for d in dialogs} | {p["prompt"] for p in prefs}
    evals = _eval_sets(random.Random(seed + 1), world.countries[s.countries // 2:], s.eval_items, seen)

    files = {
        "raw/web/web.jsonl": web, "raw/math/math.jsonl": math, "raw/multilingual/multilingual.jsonl": multi, "raw/code/code.jsonl": code,
        "post/sft.jsonl": dialogs[: s.sft], "post/sft_val.jsonl": dialogs[s.sft:],
        "post/prefs.jsonl": prefs[: s.prefs], "post/prefs_val.jsonl": prefs[s.prefs:], "post/prompts.jsonl": prompts,
        **{f"eval/{name}.jsonl": rows for name, rows in evals.items()},
    }
    for name, rows in files.items():
        _write_jsonl(out / name, rows)
    manifest = {
        "size": size, "seed": seed, "files": {name: len(rows) for name, rows in files.items()},
        "bytes": {name: (out / name).stat().st_size for name in files},
        "domains": _count(web + math + multi + code, "domain"), "planted": _count(web + math + multi + code, "planted"),
    }
    write_json(out / "manifest.json", manifest, indent=1)
    return manifest


def _eval_sets(rng: random.Random, hidden: list, n: int, seen: set[str]) -> dict[str, list[dict]]:
    knowledge = []
    for i in range(n):
        c = hidden[i % len(hidden)]
        q, a = rng.choice(knowledge_questions(c))
        others = [dict(knowledge_questions(o))[q.replace(c.name, o.name)] for o in hidden if o is not c]
        choices = [a] + rng.sample(sorted(set(others) - {a}), 3)
        rng.shuffle(choices)
        knowledge.append({"question": q, "choices": choices, "gold": choices.index(a)})
    math, code, names = [], [], set()
    while len(math) < n:
        p = make_problem(rng)
        if p.question not in seen:
            seen.add(p.question)
            math.append({"question": p.question, "answer": p.solution, "gold": str(p.answer)})
    while len(code) < min(n, DISTINCT_FUNCTIONS):
        f = make_function(rng)
        if f.name not in names:
            names.add(f.name)
            code.append({"name": f.name, "prompt": f.prompt, "tests": f.tests, "body": f.body})
    addition = []
    while len(addition) < n:
        p = addition_question(rng.randint(10, 99), rng.randint(10, 99))
        if p.question not in seen:
            seen.add(p.question)
            addition.append({"question": p.question, "answer": p.solution, "gold": str(p.answer)})
    return {"knowledge": knowledge, "math": math, "code": code, "addition": addition}


def _rec(text: str, domain: str) -> dict:
    return {"text": text, "metadata": {"domain": domain}}


def _count(records: list[dict], key: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        value = r["metadata"].get(key)
        if value is not None:
            counts[value] = counts.get(value, 0) + 1
    return counts


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with atomic_open(path) as f:
        for i, row in enumerate(rows):
            f.write(json.dumps({"id": f"{path.stem}-{i}", **row} if "text" in row else row, ensure_ascii=False) + "\n")


__all__ = ["SIZES", "generate_corpus"]
