"""Multilingual text: templated sentences about the made-up world in French, German, Spanish and Italian."""

from __future__ import annotations

import random

from herd.corpus.names import Country

TEMPLATES = {
    "fr": ("{c.name} est un pays de {c.continent}.", "La capitale de {c.name} est {c.capital}.",
           "Environ {c.population} millions de personnes vivent en {c.name}.", "On parle {c.language} en {c.name}."),
    "de": ("{c.name} ist ein Land in {c.continent}.", "Die Hauptstadt von {c.name} ist {c.capital}.",
           "Etwa {c.population} Millionen Menschen leben in {c.name}.", "In {c.name} spricht man {c.language}."),
    "es": ("{c.name} es un país de {c.continent}.", "La capital de {c.name} es {c.capital}.",
           "Unos {c.population} millones de personas viven en {c.name}.", "En {c.name} se habla {c.language}."),
    "it": ("{c.name} è un paese di {c.continent}.", "La capitale di {c.name} è {c.capital}.",
           "Circa {c.population} milioni di persone vivono in {c.name}.", "In {c.name} si parla {c.language}."),
}


def multilingual_document(countries: list[Country], lang: str, rng: random.Random) -> str:
    lines = [rng.choice(TEMPLATES[lang]).format(c=c) for c in countries for _ in range(2)]
    rng.shuffle(lines)
    return " ".join(lines)
