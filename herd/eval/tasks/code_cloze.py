"""code_cloze: the next three lines of a piece of held-out code, in their true order among three other orders.

Samples come from the documents of `data_dir/val.jsonl` ({"text"} records, e.g. the held-out files of the
standard-library corpus): the context is the ~300 characters before a line, the gold choice the next three
distinct lines as written, the others the same lines reordered. Every choice holds the same text, so what a model
knows about the snippet on its own cancels out and only its reading of the code's flow (indentation, a `def`
before its body, a call after its arguments are built) picks the answer: a graded signal for models of a few
hundred thousand parameters, which scaling-law sweeps on a CPU need downstream. (Snippets drawn from other files
instead leave tiny models at chance: their own likelihood outweighs the context.)
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

from herd.errors import HerdError
from herd.eval.task import Sample, Task

CONTEXT_CHARS = 300
SNIPPET_LINES = 3
PER_DOCUMENT = 10


class CodeCloze(Task):
    name, kind, num_fewshot, metric = "code_cloze", "multiple_choice", 0, "acc_norm"
    target_delimiter = ""

    def samples(self, data_dir: Path) -> list[Sample]:
        path = Path(data_dir) / "val.jsonl"
        if not path.exists():
            raise HerdError(f"code_cloze reads held-out documents from {path}, which does not exist")
        with path.open(encoding="utf-8") as f:
            documents = [json.loads(line)["text"].splitlines(keepends=True) for line in f if line.strip()]
        rng = random.Random(0)
        out = []
        for d, lines in enumerate(documents):
            offsets = [0, *itertools.accumulate(map(len, lines))]
            starts = [i for i in _snippet_starts(lines) if offsets[i] >= CONTEXT_CHARS]
            for i in sorted(rng.sample(starts, min(PER_DOCUMENT, len(starts)))):
                snippet = lines[i : i + SNIPPET_LINES]
                gold = "".join(snippet)
                orders = ["".join(order) for order in itertools.permutations(snippet)][1:]
                choices = [gold, *rng.sample(orders, 3)]
                rng.shuffle(choices)
                context = "".join(lines[:i])[-CONTEXT_CHARS:]
                out.append(Sample(context, gold, tuple(choices), choices.index(gold), group=str(d)))
        if not out:
            raise HerdError(f"code_cloze found no {SNIPPET_LINES} distinct non-blank lines after {CONTEXT_CHARS} "
                            f"characters in the documents of {path}")
        return out


def _snippet_starts(lines: list[str]) -> list[int]:
    """Line indices that begin SNIPPET_LINES distinct non-blank lines (ending in a newline: any order is code)."""
    return [i for i in range(len(lines) - SNIPPET_LINES + 1)
            if all(line.strip() and line.endswith("\n") for line in lines[i : i + SNIPPET_LINES])
            and len(set(lines[i : i + SNIPPET_LINES])) == SNIPPET_LINES]
