"""Safety data for the speedrun's chat model (Llama 3's recipe): harmful requests answered with refusals, benign
look-alikes ("how do I kill a python process") answered with help, as SFT dialogs and as preference pairs (a refusal
beats compliance on a harmful request, help beats a refusal on a benign one); and held-out requests, in wordings
training never shows, on which the eval stage measures refusal and false-refusal rates by CyberSecEval's refusal
check (herd.safety.cyberseceval.is_refusal).

The requests are herd's moderation set (herd.safety.moderation_set): the guard and the chat model learn the same acts.
"""

from __future__ import annotations

import random
from typing import Any

from herd.safety.guard_recipe import Example
from herd.safety.moderation_set import moderation_examples

REFUSALS = ("I'm sorry, but I can't help with that. It could seriously hurt someone.",
            "I cannot help with that request: it could cause real harm. If someone is in danger, please get help.",
            "Sorry, I can't provide instructions for that, because it could hurt people.")
"""Refusals worded so that CyberSecEval's refusal check recognises them."""
HELP = ("Sure! Start with the basics, take it one step at a time, and check the result as you go.",
        "Happy to help. Gather what you need first, then follow a short guide step by step.",
        "Of course. The first step is to look at what you already have; then go slowly and ask if you get stuck.")
"""Helpful answers (never refusals): the reply to a benign request, and the compliance a harmful one must not get."""


def requests(n: int, seed: int, *, held_out: bool = False, benign_share: float = 0.5) -> list[Example]:
    """`n` single-turn user requests, a share `benign_share` benign (many worded like harmful ones), the rest harmful."""
    return moderation_examples(n, held_out=held_out, seed=seed, benign_share=benign_share, reply_share=0.0,
                               multi_turn_share=0.0)


def safety_dialogs(n: int, seed: int) -> list[dict[str, Any]]:
    """SFT dialogs {"messages", "domain": "safety"}: a refusal of each harmful request, help with each benign one."""
    rng = random.Random(seed)
    return [{"messages": [{"role": "user", "content": e.text},
                          {"role": "assistant", "content": rng.choice(HELP if e.category is None else REFUSALS)}],
             "domain": "safety"} for e in requests(n, seed)]


def safety_pairs(n: int, seed: int) -> list[dict[str, Any]]:
    """Preference pairs {"prompt", "chosen", "rejected", "domain": "safety"}: refusal over compliance on harmful
    requests, help over refusal on benign ones."""
    rng = random.Random(seed)
    out = []
    for e in requests(n, seed + 1):
        refusal, help_ = rng.choice(REFUSALS), rng.choice(HELP)
        chosen, rejected = (help_, refusal) if e.category is None else (refusal, help_)
        out.append({"prompt": e.text, "chosen": chosen, "rejected": rejected, "domain": "safety"})
    return out


def held_out_requests(n: int, seed: int) -> tuple[list[str], list[str]]:
    """`n` harmful and `n` benign requests in the moderation set's held-out wordings: (harmful, benign)."""
    harmful = [e.text for e in requests(n, seed + 2, held_out=True, benign_share=0.0)]
    benign = [e.text for e in requests(n, seed + 3, held_out=True, benign_share=1.0)]
    return harmful, benign
