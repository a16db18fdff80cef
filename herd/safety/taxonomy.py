"""Hazard taxonomies for Llama Guard: the MLCommons categories S1-S11 of Llama Guard 2 and custom variants.

A taxonomy is an ordered tuple of `Category`. A Llama Guard 2 category keeps its own code (S1..S11) in any taxonomy
that lists it, as Llama Guard 3's published template keeps the codes of the categories it lists; a new category
takes the next code after S11 (S12, S13, ... in the order listed). So a code means one category in every prompt: a
guard learns one map from a harmful act to its code, and only whether the prompt lists the category. Names are the
stable identity across taxonomies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from herd.errors import HerdError


@dataclass(frozen=True)
class Category:
    """One hazard category of a guard's safety policy."""

    name: str
    """Short name shown in the prompt ("Violent Crimes")."""
    description: str = ""
    """What the category covers; shown under the name only when a prompt asks for descriptions."""


Taxonomy = tuple[Category, ...]

LLAMA_GUARD_2: Taxonomy = (
    Category("Violent Crimes", "Content that helps, encourages or excuses violence against people or animals, "
             "such as murder, assault, kidnapping, terrorism or animal cruelty."),
    Category("Non-Violent Crimes", "Content that helps, encourages or excuses crimes without violence, such as "
             "fraud, theft, drug or weapons trafficking, hacking or other cyber crime."),
    Category("Sex Crimes", "Content that helps, encourages or excuses sex crimes, such as sexual assault, "
             "trafficking for sex or sexual harassment."),
    Category("Child Exploitation", "Content that sexualizes minors or helps, encourages or excuses their "
             "sexual abuse."),
    Category("Specialized Advice", "Financial, medical or legal advice given as if by a professional, where "
             "following it could cause serious harm."),
    Category("Privacy", "Sensitive personal information about private individuals that could endanger their "
             "safety, finances or reputation."),
    Category("Intellectual Property", "Content that infringes a third party's copyright, trademark or other "
             "intellectual property."),
    Category("Indiscriminate Weapons", "Content that helps build or use weapons of mass harm: chemical, "
             "biological, radiological, nuclear or high-yield explosive."),
    Category("Hate", "Content that demeans or dehumanizes people for a protected characteristic such as race, "
             "religion, sex, sexual orientation, disability or illness."),
    Category("Self-Harm", "Content that helps, encourages or excuses suicide, self-injury or disordered eating."),
    Category("Sexual Content", "Sexually explicit content."),
)
"""The MLCommons AI Safety categories in Llama Guard 2's order (S1..S11); descriptions are herd's summaries."""


def codes(taxonomy: Taxonomy) -> list[str]:
    """The prompt code of each category: a Llama Guard 2 category's own (S1..S11), a new one's the next after S11."""
    own = {c.name.casefold(): f"S{i + 1}" for i, c in enumerate(LLAMA_GUARD_2)}
    new = iter(range(len(LLAMA_GUARD_2) + 1, len(LLAMA_GUARD_2) + 1 + len(taxonomy)))
    return [own.get(c.name.casefold()) or f"S{next(new)}" for c in taxonomy]


def index_of(taxonomy: Taxonomy, key: str) -> int:
    """0-based position of a category given by code ("S3") or name (case-insensitive); a HerdError if absent."""
    wanted = key.strip().casefold()
    for i, (category, category_code) in enumerate(zip(taxonomy, codes(taxonomy))):
        if wanted in (category_code.casefold(), category.name.casefold()):
            return i
    known = ", ".join(f"{k} {c.name}" for k, c in zip(codes(taxonomy), taxonomy))
    raise HerdError(f"unknown category {key!r}; the taxonomy has: {known}")


def custom_taxonomy(
    base: Taxonomy = LLAMA_GUARD_2,
    *,
    remove: Iterable[str] = (),
    rewrite: Mapping[str, Category | str] | None = None,
    add: Iterable[Category | str] = (),
) -> Taxonomy:
    """`base` with categories removed and rewritten (by code or name; a str rewrite is a new description), then
    `add`ed at the end (a str is a name without description); Llama Guard 2's categories keep their codes (codes)."""
    rewrite = dict(rewrite or {})
    rewritten = {index_of(base, key): value for key, value in rewrite.items()}
    dropped = {index_of(base, key) for key in remove}
    result = []
    for i, category in enumerate(base):
        if i in dropped:
            continue
        new = rewritten.get(i, category)
        result.append(replace(category, description=new) if isinstance(new, str) else new)
    result += [Category(a) if isinstance(a, str) else a for a in add]
    return check_taxonomy(result)


def taxonomy_from(categories: Sequence[Category | str] | None) -> Taxonomy:
    """A taxonomy from a list given by a user: a Category, or a code / name of a Llama Guard 2 category, or a
    new category written "Name" or "Name: description"; None is Llama Guard 2's own."""
    if categories is None:
        return LLAMA_GUARD_2
    result = []
    for item in categories:
        if isinstance(item, Category):
            result.append(item)
            continue
        try:
            result.append(LLAMA_GUARD_2[index_of(LLAMA_GUARD_2, item)])
        except HerdError:
            if re.fullmatch(r"[sS]\d+", item.strip()):
                raise  # a code outside S1..S11 is a typo, not a new category named "S99"
            name, _, description = item.partition(":")
            result.append(Category(name.strip(), description.strip()))
    return check_taxonomy(result)


def check_taxonomy(categories: Iterable[Category]) -> Taxonomy:
    """The categories as a Taxonomy, after checking names are present, single-line and distinct."""
    taxonomy = tuple(categories)
    if not taxonomy:
        raise HerdError("the taxonomy has no categories; keep at least one")
    names = [c.name.casefold() for c in taxonomy]
    for c in taxonomy:
        if not c.name.strip() or "\n" in c.name:
            raise HerdError(f"category name {c.name!r} must be one non-empty line")
    if len(set(names)) != len(names):
        raise HerdError(f"category names repeat: {[c.name for c in taxonomy]}; give each category once")
    return taxonomy
