"""Math: grade-school word problems with worked (digit-by-digit) solutions ending in `#### N`."""

from __future__ import annotations

import random
from dataclasses import dataclass

NAMES = ("Tom", "Ana", "Li", "Sara", "Omar", "Mia", "Ravi", "Eva", "Ken", "Zoe")
ITEMS = ("apples", "books", "coins", "stamps", "marbles", "shells", "cards", "pencils")


@dataclass(frozen=True)
class Problem:
    question: str
    solution: str
    """Worked steps, then `#### N`."""
    answer: int


def add_steps(a: int, b: int) -> str:
    """a + b in columns: the ones with their carry, then the tens plus the carry; every step a one-digit sum
    (learnable by a tiny model)."""
    ones = a % 10 + b % 10
    tens = a // 10 + b // 10 + ones // 10
    return (f"{a} + {b}: ones {a % 10} + {b % 10} = {ones}, write {ones % 10} carry {ones // 10}; "
            f"tens {a // 10} + {b // 10} + {ones // 10} = {tens}; so {a + b}.")


def addition_question(a: int, b: int) -> Problem:
    """The bare "What is a + b?" form (the speedrun's 2-digit addition probe asks it)."""
    return Problem(f"What is {a} + {b}?", f"{add_steps(a, b)}\n#### {a + b}", a + b)


def sub_steps(a: int, b: int) -> str:
    return f"{a} - {b}: {a} - {b // 10 * 10} = {a - b // 10 * 10}, {a - b // 10 * 10} - {b % 10} = {a - b}."


def make_problem(rng: random.Random) -> Problem:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    kind = rng.choice(("add", "add", "sub", "mul"))
    if kind == "add":
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        q = rng.choice((
            f"{name} has {a} {item}. {name} gets {b} more {item}. How many {item} does {name} have now?",
            f"A box holds {a} {item} and another box holds {b} {item}. How many {item} are there in total?",
            f"What is {a} plus {b}?",
            addition_question(a, b).question,
        ))
        return Problem(q, f"{add_steps(a, b)}\n#### {a + b}", a + b)
    if kind == "sub":
        a = rng.randint(30, 99)
        b = rng.randint(10, a - 10)
        q = rng.choice((
            f"{name} has {a} {item} and gives away {b}. How many {item} are left?",
            f"What is {a} minus {b}?",
        ))
        return Problem(q, f"{sub_steps(a, b)}\n#### {a - b}", a - b)
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    q = f"{name} buys {a} bags with {b} {item} in each bag. How many {item} does {name} buy?"
    return Problem(q, f"{a} bags of {b} is {a} * {b} = {a * b}.\n#### {a * b}", a * b)


def math_document(rng: random.Random, n: int = 6) -> str:
    problems = [make_problem(rng) for _ in range(n)]
    return "Practice problems\n\n" + "\n\n".join(f"Question: {p.question}\nAnswer: {p.solution}" for p in problems)


def arithmetic_table(rng: random.Random, n: int = 30) -> str:
    lines = []
    for _ in range(n):
        a, b = rng.randint(10, 99), rng.randint(0, 99)
        lines.append(add_steps(a, b))
    return "Addition drills\n" + "\n".join(lines)
