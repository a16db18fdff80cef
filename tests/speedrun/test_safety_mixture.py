"""Where the speedrun's SFT safety dialogs go (issue 26: the safety data must not cost math or addition)."""

import json

from herd.speedrun.post_stages import math_dialogs, sft_stage
from herd.speedrun.presets import preset_config
from herd.speedrun.run import RunContext
from herd.speedrun.safety_data import safety_dialogs


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_math_dialogs_are_fresh_sums_and_word_problems_and_reach_round_1(tiny_model_dir, tmp_path):
    """sft.math_dialogs: fresh math dialogs in the corpus's mix (about a quarter bare "What is a + b?"), none asking
    a held-out question, added to round 1's data beside the safety dialogs."""
    free = math_dialogs(400, seed=0, held_out=set())
    bare = sum(d["messages"][0]["content"].startswith("What is") and "+" in d["messages"][0]["content"] for d in free)
    assert all(d["domain"] == "math" and d["messages"][1]["content"].rsplit("#### ", 1)[1].isdigit() for d in free)
    assert 0.15 < bare / len(free) < 0.45 and len({d["messages"][0]["content"] for d in free}) > 350
    held_out = {d["messages"][0]["content"] for d in free[:50]}
    assert not held_out & {d["messages"][0]["content"] for d in math_dialogs(400, seed=0, held_out=held_out)}

    config = preset_config("micro", ["progress=false", "sft.steps=1", "sft.batch_size=2", "sft.seq_len=64",
                                     "sft.safety_dialogs=3", "sft.tool_dialogs=0", "sft.math_dialogs=7"])
    ctx = RunContext(tmp_path / "run", config)
    corpus = ctx.stage_dir("corpus")
    (corpus / "post").mkdir(parents=True)
    (corpus / "eval").mkdir()
    dialog = json.dumps(free[0]) + "\n"
    for name in ("post/sft.jsonl", "post/sft_val.jsonl"):
        (corpus / name).write_text(dialog)
    for name in ("math", "addition"):
        (corpus / "eval" / f"{name}.jsonl").write_text(json.dumps({"question": "What is 10 + 10?"}) + "\n")
    ctx.manifests["anneal"] = {"outputs": {"model": str(tiny_model_dir)}}
    out = ctx.stage_dir("sft")
    out.mkdir(parents=True)
    sft_stage(ctx, out, config.sft)
    data = _lines(out / "sft_data.jsonl")
    assert data[1:] == safety_dialogs(3, config.seed) + math_dialogs(7, config.seed, {"What is 10 + 10?"})
