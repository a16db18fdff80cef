"""Code: Python standard-library source (from this interpreter's own stdlib) and generated small functions
with docstrings and unit tests."""

from __future__ import annotations

import random
from dataclasses import dataclass

from herd.corpus.stdlib import stdlib_root

OPS = (
    ("plus", "return x + {k}", "Return x plus {k}.", lambda x, k: x + k),
    ("minus", "return x - {k}", "Return x minus {k}.", lambda x, k: x - k),
    ("times", "return x * {k}", "Return x times {k}.", lambda x, k: x * k),
    ("mod", "return x % {k}", "Return the remainder of x divided by {k}.", lambda x, k: x % k),
    ("is_above", "return x > {k}", "Return True when x is greater than {k}.", lambda x, k: x > k),
)

K_RANGE = (2, 19)
DISTINCT_FUNCTIONS = len(OPS) * (K_RANGE[1] - K_RANGE[0] + 1)
"""How many different functions `make_function` can write (held-out sets cannot be larger)."""


@dataclass(frozen=True)
class CodeProblem:
    name: str
    prompt: str
    """The signature and docstring; the model writes the body."""
    body: str
    tests: str
    """Asserts calling `name`."""


def make_function(rng: random.Random) -> CodeProblem:
    op, body, doc, fn = rng.choice(OPS)
    k = rng.randint(*K_RANGE)
    name = f"{op}_{k}"
    prompt = f'def {name}(x):\n    """{doc.format(k=k)}"""\n'
    xs = [rng.randint(0, 50) for _ in range(3)]
    tests = "\n".join(f"assert {name}({x}) == {fn(x, k)!r}" for x in xs)
    return CodeProblem(name, prompt, "    " + body.format(k=k) + "\n", tests)


def function_document(rng: random.Random, n: int = 4) -> str:
    parts = []
    for _ in range(n):
        p = make_function(rng)
        parts.append(p.prompt + p.body + "\n\n" + p.tests + "\n")
    return "\n\n".join(parts)


def stdlib_documents(rng: random.Random, max_chars: int, chunk_chars: int = 6000) -> list[str]:
    """Chunks of this interpreter's pure-Python stdlib modules (a seeded choice of files), up to `max_chars`."""
    files = sorted(p for p in stdlib_root().glob("*.py") if not p.name.startswith("_"))
    rng.shuffle(files)
    docs, total = [], 0
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        for start in range(0, min(len(text), 4 * chunk_chars), chunk_chars):
            chunk = text[start: start + chunk_chars]
            docs.append(f"# {path.name}\n{chunk}")
            total += len(chunk)
            if total >= max_chars:
                return docs
    return docs
