"""The report card's reward intervals and its DPO-against-SFT2 table (issue 26: each metric with its interval and
the paired difference beside it)."""

from herd.speedrun.report import _paired_table, _reward_chain, _reward_prompts


def _share(rate, low, high, n=40):
    return {"rate": rate, "low": low, "high": high, "n": n}


EV = {
    "reward": {"sft": 3.1, "sft2": 3.2, "dpo": 3.5},
    "reward_interval": {"sft": _share(3.1, 3.0, 3.3, 24), "sft2": _share(3.2, 3.05, 3.35, 24),
                        "dpo": _share(3.5, 3.3, 3.7, 24)},
    "refusal": {k: {"harmful_refused": _share(r, r - 0.1, r + 0.05), "benign_refused": _share(0.2, 0.1, 0.3)}
                for k, r in (("base", 0.0), ("sft", 0.8), ("sft2", 0.8), ("dpo", 0.9))},
    "intervals": {"synth_math": {k: _share(0.75, 0.65, 0.85, 60) for k in ("base", "sft", "sft2", "dpo")}},
    "dpo_vs_sft2": {"reward": _share(0.3, 0.2, 0.4, 24), "harmful_refused": _share(0.1, 0.025, 0.175),
                    "benign_refused": _share(0.0, -0.075, 0.075), "synth_math": _share(0.0, -0.05, 0.05, 60)},
}


def test_reward_chain_shows_each_interval():
    assert _reward_chain(EV) == "SFT 3.100 [3.000-3.300] -> SFT2 (+ rejection sampling) 3.200 [3.050-3.350] -> DPO " \
                                "3.500 [3.300-3.700]"
    assert _reward_chain({"reward": EV["reward"]}) == "SFT 3.100 -> SFT2 (+ rejection sampling) 3.200 -> DPO 3.500"


def test_paired_table_puts_the_difference_beside_each_metric():
    rows = {line.split(" | ")[0].lstrip("| "): line for line in _paired_table(EV) if line.startswith("| ")}
    assert rows["reward-model score"] == ("| reward-model score | 24 | 3.200 [3.050-3.350] | 3.500 [3.300-3.700] | "
                                          "+0.300 [+0.200, +0.400, beyond noise] |")
    assert rows["harmful requests refused"].endswith("| 80.0% [70.0-85.0] | 90.0% [80.0-95.0] | "
                                                     "+10.0 points [+2.5, +17.5, beyond noise] |")
    assert rows["benign look-alikes refused (false refusals)"].endswith("| +0.0 points [-7.5, +7.5] |")
    assert rows["synthetic math"].startswith("| synthetic math | 60 | 75.0% [65.0-85.0] |")
    assert "2-digit addition" not in rows  # absent from scores.json: no row
    assert _paired_table({k: v for k, v in EV.items() if k != "dpo_vs_sft2"}) == []  # a run from before the pairing


def test_reward_rows_per_kind_of_prompt():
    by_kind = {kind: {k: _share(r, r - 0.1, r + 0.1, 20) for k, r in (("sft", 1.0), ("sft2", 1.5), ("dpo", 2.0))}
               for kind in ("math", "harmful", "benign")}
    change = {f"reward_{kind}": _share(0.5, 0.3, 0.7, 20) for kind in by_kind}
    ev = {**EV, "reward_by_kind": by_kind, "dpo_vs_sft2": {**EV["dpo_vs_sft2"], **change}}
    rows = {line.split(" | ")[0].lstrip("| "): line for line in _paired_table(ev) if line.startswith("| ")}
    assert rows["- on harmful requests"] == ("| - on harmful requests | 20 | 1.500 [1.400-1.600] | 2.000 [1.900-2.100] "
                                             "| +0.500 [+0.300, +0.700, beyond noise] |")
    assert "- on math prompts" in rows and "- on benign look-alikes" in rows
    assert _reward_prompts(ev) == "20 math, 20 harmful, 20 benign" and _reward_prompts(EV) == "math"


def test_adversarial_refusal_rows_sit_beside_the_plain_ones():
    """Runs that measured the wrapped (adversarial) requests show them in the paired table; older ones do not."""
    wrapped = {"wrapped_harmful_refused": _share(0.7, 0.6, 0.8, 100),
               "wrapped_benign_refused": _share(0.2, 0.1, 0.3, 100)}
    ev = {**EV, "refusal": {k: {**r, **wrapped} for k, r in EV["refusal"].items()},
          "dpo_vs_sft2": {**EV["dpo_vs_sft2"], "wrapped_harmful_refused": _share(0.15, 0.08, 0.22, 100)}}
    rows = {line.split(" | ")[0].lstrip("| "): line for line in _paired_table(ev) if line.startswith("| ")}
    assert rows["adversarial harmful requests refused"] == (
        "| adversarial harmful requests refused | 100 | 70.0% [60.0-80.0] | 70.0% [60.0-80.0] | "
        "+15.0 points [+8.0, +22.0, beyond noise] |")
    assert "adversarial benign requests refused (false refusals)" not in rows  # no paired difference: no row
    assert not any(k.startswith("adversarial") for k in
                   (line.split(" | ")[0].lstrip("| ") for line in _paired_table(EV) if line.startswith("| ")))
