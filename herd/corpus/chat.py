"""Post-training data from the same generators: chat SFT dialogs, preference pairs (a correct, worked reply
beats a wrong or unhelpful one) and prompts for rejection sampling."""

from __future__ import annotations

import random

from herd.corpus.code import make_function
from herd.corpus.general import knowledge_questions
from herd.corpus.math import addition_question, make_problem
from herd.corpus.multilingual import TEMPLATES
from herd.corpus.names import Country

UNHELPFUL = ("I am not sure.", "Let me think about that.", "Maybe.", "That is a hard question.")
"""Non-answers a preference pair rejects; none is a refusal (the safety pairs prefer refusals)."""


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def sft_dialog(rng: random.Random, countries: list[Country]) -> dict:
    kind = rng.choice(("math", "math", "math", "addition", "knowledge", "code", "multilingual"))
    if kind == "addition":
        p = addition_question(rng.randint(10, 99), rng.randint(10, 99))
        return {"messages": [_user(p.question), _assistant(p.solution)], "domain": "math"}
    if kind == "math":
        p = make_problem(rng)
        return {"messages": [_user(p.question), _assistant(p.solution)], "domain": kind}
    if kind == "knowledge":
        c = rng.choice(countries)
        q, a = rng.choice(knowledge_questions(c))
        return {"messages": [_user(q), _assistant(f"{a}. {q.replace('What is the', 'The').rstrip('?')} is {a}.")],
                "domain": kind}
    if kind == "code":
        f = make_function(rng)
        return {"messages": [_user(f"Complete this function:\n{f.prompt}"), _assistant(f.prompt + f.body)], "domain": kind}
    c = rng.choice(countries)
    lang = rng.choice(tuple(TEMPLATES))
    ask = {"fr": "Quelle est la capitale de {}?", "de": "Was ist die Hauptstadt von {}?",
           "es": "¿Cuál es la capital de {}?", "it": "Qual è la capitale di {}?"}[lang]
    return {"messages": [_user(ask.format(c.name)), _assistant(TEMPLATES[lang][1].format(c=c))], "domain": kind}


def preference_pair(rng: random.Random, countries: list[Country]) -> dict:
    """Chosen: the worked, correct reply; rejected: a wrong answer or a non-answer."""
    if rng.random() < 0.7:
        p = make_problem(rng)
        wrong = p.answer + rng.choice((-10, -2, -1, 1, 2, 10))
        rejected = rng.choice((f"#### {wrong}", p.solution.replace(f"#### {p.answer}", f"#### {wrong}"),
                               rng.choice(UNHELPFUL)))
        return {"prompt": p.question, "chosen": p.solution, "rejected": rejected, "domain": "math"}
    c = rng.choice(countries)
    q, a = rng.choice(knowledge_questions(c))
    other = rng.choice([x for x in countries if x is not c])
    wrong = dict(knowledge_questions(other))[q.replace(c.name, other.name)]
    chosen = f"{a}. {q.replace('What is the', 'The').rstrip('?')} is {a}."
    rejected = rng.choice((wrong if wrong != a else rng.choice(UNHELPFUL), rng.choice(UNHELPFUL)))
    return {"prompt": q, "chosen": chosen, "rejected": rejected, "domain": "knowledge"}
