"""Deterministic made-up names and the small fact world the corpus talks about.

Every entity is invented (names from syllables), so a model can only know its facts from this corpus:
what the knowledge task checks was learned here, not elsewhere.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "ta", "shi", "vo", "den", "par", "qu", "ix", "bel", "sor", "an", "te",
             "mar", "zu", "fen", "dor", "li", "ga", "tho", "res")
CONTINENTS = ("Arvena", "Bolmark", "Celunde", "Dravost")
LANGUAGES = ("Velsh", "Oranic", "Tamuri", "Kesh", "Lorvan", "Pelish")
CURRENCIES = ("crown", "mark", "shell", "dinar", "florin", "bead")
COLORS = ("red", "blue", "green", "gold", "white", "black")
ANIMALS = ("owl", "wolf", "heron", "bear", "fox", "lynx", "stag")
PROFESSIONS = ("astronomer", "painter", "engineer", "poet", "physician", "composer", "explorer")
DISCOVERIES = ("a comet", "a river delta", "a vaccine", "a bridge design", "a star map", "a symphony", "a new alloy")


def make_name(rng: random.Random, used: set[str], parts: tuple[int, int] = (2, 3)) -> str:
    """A fresh capitalised name of 2-3 syllables, never one already in `used`."""
    while True:
        name = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(*parts))).capitalize()
        if name not in used and len(name) >= 4:
            used.add(name)
            return name


@dataclass(frozen=True)
class Country:
    name: str
    capital: str
    continent: str
    language: str
    currency: str
    population: int
    """Millions."""
    flag: str
    animal: str


@dataclass(frozen=True)
class Person:
    name: str
    country: str
    profession: str
    born: int
    discovery: str


@dataclass(frozen=True)
class World:
    countries: list[Country]
    people: list[Person]


def make_world(rng: random.Random, n_countries: int, people_per_country: int = 2) -> World:
    used: set[str] = set()
    countries = [
        Country(make_name(rng, used), make_name(rng, used), rng.choice(CONTINENTS), rng.choice(LANGUAGES),
                rng.choice(CURRENCIES), rng.randint(1, 90), rng.choice(COLORS), rng.choice(ANIMALS))
        for _ in range(n_countries)
    ]
    people = [
        Person(make_name(rng, used) + " " + make_name(rng, used), c.name, rng.choice(PROFESSIONS),
               rng.randint(1700, 1990), rng.choice(DISCOVERIES))
        for c in countries for _ in range(people_per_country)
    ]
    return World(countries, people)
