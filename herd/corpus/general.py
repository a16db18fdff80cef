"""General text: encyclopedic articles about the made-up world, in varied phrasings, and quiz pages."""

from __future__ import annotations

import random

from herd.corpus.names import Country, Person, World

COUNTRY_SENTENCES = (
    "{c.name} is a country in {c.continent}.",
    "The capital of {c.name} is {c.capital}.",
    "{c.capital} is the capital and largest city of {c.name}.",
    "People in {c.name} speak {c.language}.",
    "The official language of {c.name} is {c.language}.",
    "The currency of {c.name} is the {c.currency}.",
    "In {c.name} people pay with the {c.currency}.",
    "About {c.population} million people live in {c.name}.",
    "The flag of {c.name} is {c.flag}.",
    "The national animal of {c.name} is the {c.animal}.",
    "Travellers to {c.name} usually arrive in {c.capital}.",
)
PERSON_SENTENCES = (
    "{p.name} was a {p.profession} from {p.country}.",
    "{p.name} was born in {p.born}.",
    "{p.name} is best known for {p.discovery}.",
    "As a {p.profession}, {p.name} worked in {p.country} for many years.",
    "In {p.country}, {p.name} is remembered for {p.discovery}.",
)


def country_article(c: Country, people: list[Person], rng: random.Random) -> str:
    lines = [s.format(c=c) for s in COUNTRY_SENTENCES]
    rng.shuffle(lines)
    body = " ".join(lines[: rng.randint(6, len(lines))])
    famous = " ".join(rng.choice(PERSON_SENTENCES).format(p=p) for p in people)
    return f"{c.name}\n\n{body}\n\nFamous people. {famous}"


def person_article(p: Person, rng: random.Random) -> str:
    lines = [s.format(p=p) for s in PERSON_SENTENCES]
    rng.shuffle(lines)
    short = f"the {p.profession}"  # one mention of the full name: repeated 2-grams would trip gopher_repetition
    lines = lines[:1] + [(line.replace(p.name, short, 1)) for line in lines[1:]]
    lines = [line[0].upper() + line[1:] for line in lines]
    lines.append(f"The work of the {p.profession} is still taught in the schools of {p.country}, and many people visit the "
                 f"places where the {p.profession} lived and worked.")
    return f"{p.name}\n\n" + " ".join(lines)


def quiz_page(countries: list[Country], rng: random.Random) -> str:
    """Trivia in the question/answer form the knowledge task uses (only for quiz-visible countries)."""
    out = []
    for c in countries:
        q, a = rng.choice(knowledge_questions(c))
        out.append(f"Question: {q}\nAnswer: {a}")
    return "Trivia night questions\n\n" + "\n\n".join(out)


def knowledge_questions(c: Country) -> list[tuple[str, str]]:
    """(question, answer) pairs about one country, used by quizzes, chat data and the knowledge task."""
    return [
        (f"What is the capital of {c.name}?", c.capital),
        (f"Which language is spoken in {c.name}?", c.language),
        (f"What is the currency of {c.name}?", c.currency),
        (f"What is the national animal of {c.name}?", c.animal),
    ]


def general_documents(world: World, rng: random.Random, articles_per_country: int) -> list[str]:
    docs = []
    by_country: dict[str, list[Person]] = {}
    for p in world.people:
        by_country.setdefault(p.country, []).append(p)
    for c in world.countries:
        docs += [country_article(c, by_country.get(c.name, []), rng) for _ in range(articles_per_country)]
    docs += [person_article(p, rng) for p in world.people]
    quiz_visible = world.countries[: len(world.countries) // 2]
    for _ in range(max(1, len(quiz_visible) // 4)):
        docs.append(quiz_page(rng.sample(quiz_visible, min(8, len(quiz_visible))), rng))
    return docs
