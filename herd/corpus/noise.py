"""Planted noise, so the data pipeline's filters and dedup have real work: exact and near duplicates,
boilerplate (navigation/cookie lines repeated across pages, PII in footers), character soup and repeated lines.

Each noisy record carries `metadata.planted` naming its kind, so the report can check what was removed.
"""

from __future__ import annotations

import random
import string

BOILERPLATE_LINES = (
    "Home | About | Contact | Privacy Policy | Terms of Service",
    "We use cookies to improve your experience. By continuing you accept our cookie policy.",
    "Subscribe to our newsletter for weekly updates!",
    "Copyright 2024 Example Media Group. All rights reserved.",
    "Share this page: Facebook Twitter Email Print",
)


def near_duplicate(text: str, rng: random.Random, rate: float = 0.03) -> str:
    """`text` with a few words dropped or repeated: MinHash still sees it as the same document."""
    words = text.split(" ")
    out = []
    for w in words:
        r = rng.random()
        if r < rate / 2:
            continue
        out.append(w)
        if r > 1 - rate / 2:
            out.append(w)
    return " ".join(out)


def with_boilerplate(text: str, rng: random.Random) -> str:
    """A page wrapped in site navigation, a cookie banner and a footer with a contact address."""
    head = rng.sample(BOILERPLATE_LINES, 2)
    footer = f"Contact the editors at editor{rng.randint(1, 99)}@example.com or call 555-01{rng.randint(10, 99)}."
    return "\n".join([*head, text, footer, BOILERPLATE_LINES[3]])


def character_soup(rng: random.Random, n: int = 800) -> str:
    chars = string.ascii_letters + string.digits + string.punctuation + "    "
    return "".join(rng.choice(chars) for _ in range(n))


def repeated_lines(rng: random.Random) -> str:
    line = rng.choice(("Click here to win a free prize now", "BUY CHEAP WATCHES ONLINE BEST PRICE",
                       "Lorem ipsum dolor sit amet consectetur", "404 page not found please try again"))
    return "\n".join([line] * rng.randint(20, 60))


def keyword_spam(rng: random.Random) -> str:
    words = ("cheap", "best", "free", "deal", "online", "buy", "now", "sale")
    return " ".join(rng.choice(words) for _ in range(rng.randint(150, 300)))


def plant_noise(records: list[dict], rng: random.Random, *, dup: float, near: float, boiler: float,
                junk: float) -> list[dict]:
    """`records` plus planted noise (shares of the clean count), shuffled; originals are never changed."""
    n = len(records)
    noisy: list[dict] = []
    for kind, share in (("exact_duplicate", dup), ("near_duplicate", near), ("boilerplate", boiler)):
        for source in rng.sample(records, int(n * share)):
            text = source["text"]
            text = near_duplicate(text, rng) if kind == "near_duplicate" else with_boilerplate(text, rng) \
                if kind == "boilerplate" else text
            noisy.append({**source, "text": text, "metadata": {**source["metadata"], "planted": kind}})
    makers = (character_soup, repeated_lines, keyword_spam)
    for i in range(int(n * junk)):
        noisy.append({"text": makers[i % 3](rng), "metadata": {"domain": "junk", "planted": makers[i % 3].__name__}})
    out = records + noisy
    rng.shuffle(out)
    return out
