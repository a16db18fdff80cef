"""herd speedrun: presets build valid stage configs; the micro preset runs the whole spine, skips on rerun."""

import json
import time
from pathlib import Path

import pytest

from herd.config_overrides import from_dict, to_dict
from herd.errors import HerdError
from herd.model import ModelConfig, preset
from herd.speedrun import PRESETS, STAGES, preset_config, speedrun
from herd.speedrun.presets import micro
from herd.speedrun.eval_stages import REFUSAL_KEYS
from herd.speedrun.post_stages import stage_fields
from herd.speedrun.run import RunContext
from herd.speedrun.train_stages import pretrain_config


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_construct_valid_configs(name, tmp_path):
    config = preset_config(name)
    ctx = RunContext(tmp_path, config)
    sources = {d: str(tmp_path / d) for d in ("web", "math", "multilingual", "code", "val")}
    ctx.manifests["tokenize"] = {"outputs": {"sources": sources}}
    pretrain = pretrain_config(ctx, tmp_path / "p", config.pretrain, steps=config.pretrain.steps)
    model = from_dict(ModelConfig, {**config.pretrain.model, "vocab_size": config.tokenizer.vocab_size + 256},
                      base=preset("tiny"))
    assert pretrain.seq_len <= model.max_seq_len and model.dim % model.n_heads == 0
    anneal = pretrain_config(ctx, tmp_path / "a", config.pretrain, steps=pretrain.steps + config.anneal.steps,
                             anneal=config.anneal.steps)
    assert anneal.optim.anneal_steps == config.anneal.steps


def test_bad_preset_and_override():
    with pytest.raises(HerdError, match="choose from: micro, tiny, gpu, node"):
        preset_config("huge")
    with pytest.raises(HerdError, match=r"unknown config key 'pretrain.stepz'; valid keys in pretrain: model, steps, "):
        preset_config("tiny", ["pretrain.stepz=3"])
    with pytest.raises(HerdError, match=r"unknown config key 'pretrian'; valid keys: corpus, data, tokenizer, "):
        preset_config("tiny", ["pretrian.steps=3"])
    with pytest.raises(HerdError, match="config key 'sft.lr' takes a float, got 'fast'"):
        preset_config("tiny", ["sft.lr=fast"])
    with pytest.raises(HerdError, match="unknown tokenizer.source 'sentencepiece'; choose from: bpe, llama3"):
        preset_config("micro", ["tokenizer.source=sentencepiece"])
    config = preset_config("tiny", ["pretrain.steps=7", "pretrain.weights.web=0.5", "pretrain.model.dim=96",
                                    "eval.real_tasks=[\"gsm8k\"]", "progress=no"])
    assert config.pretrain.steps == 7 and config.pretrain.weights["web"] == 0.5 and config.pretrain.weights["math"] == 0.3
    assert config.pretrain.model["n_layers"] == 4 and config.eval.real_tasks == ["gsm8k"] and config.progress is False
    assert preset_config("tiny").pretrain.steps == 400  # overrides change a copy, never the preset


TINY = {  # the presets' numbers as they were when they were nested dicts (issue 26: safety data, a fine-tuned guard)
    "seed": 0, "device": "cpu", "dtype": "auto", "progress": True,
    "corpus": {"size": "tiny"}, "data": {"workers": 2, "val_every": 40},
    "tokenizer": {"source": "bpe", "vocab_size": 2048}, "tokenize": {"workers": 2},
    "pretrain": {"model": {"dim": 160, "n_layers": 4, "n_heads": 4, "n_kv_heads": 2, "multiple_of": 64, "max_seq_len": 1024},
                 "steps": 400, "batch_size": 16, "seq_len": 256, "lr": 3e-3, "warmup_steps": 40,
                 "weights": {"web": 0.40, "math": 0.30, "code": 0.17, "multilingual": 0.13},
                 "eval_interval": 100, "val_batches": 8, "checkpoint_interval": 100,
                 "compile": False, "activation_checkpointing": False},
    "anneal": {"steps": 60},
    "sft": {"steps": 720, "batch_size": 16, "seq_len": 256, "lr": 1e-3, "safety_dialogs": 1500, "tool_dialogs": 600,
            "math_dialogs": 1000},
    "rm": {"steps": 240, "batch_size": 16, "seq_len": 192, "lr": 2.5e-4, "safety_pairs": 600,
           "safety_benign_share": 0.5},
    "rejection": {"samples_per_prompt": 4, "max_new_tokens": 64, "temperature": 0.8},
    "sft2": {"steps": 160, "batch_size": 16, "seq_len": 256, "lr": 5e-4, "rs_repeats": 2},
    "dpo": {"steps": 60, "batch_size": 16, "seq_len": 192, "lr": 1e-4, "beta": 0.1, "safety_pairs": 200,
            "safety_benign_share": 0.5, "tool_pairs": 300, "on_policy_prompts": 0, "on_policy_samples": 4,
            "reward_pair_samples": 0, "safety_wrapped_share": 0.0},
    "eval": {"limit": 60, "data_dir": "data/benchmarks", "real_tasks": ["gsm8k", "humaneval"], "real_limit": 20,
             "refusal_prompts": 100, "tool_limit": 60},
    "safety": {"guard_steps": 800, "guard_examples": 12000, "guard_eval": 200, "guard_batch_size": 4,
               "guard_seq_len": 1024, "guard_lr": 2e-3, "probe_prompts": 16, "max_new_tokens": 48},
    "final": {"transcripts": 4, "max_new_tokens": 64, "rm_prompts": 60},
}
MICRO_CHANGES = {
    "corpus": {"size": "micro"}, "data": {"val_every": 20}, "tokenizer": {"vocab_size": 512},
    "pretrain": {"model": {"dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "multiple_of": 32, "max_seq_len": 1024},
                 "steps": 30, "batch_size": 8, "seq_len": 128, "warmup_steps": 5, "eval_interval": 15,
                 "val_batches": 2, "checkpoint_interval": 15},
    "anneal": {"steps": 10},
    "sft": {"steps": 15, "batch_size": 8, "seq_len": 128, "safety_dialogs": 30, "tool_dialogs": 40},
    "sft2": {"steps": 8, "batch_size": 8, "seq_len": 128},
    "rm": {"steps": 10, "batch_size": 8, "seq_len": 128, "safety_pairs": 16},
    "dpo": {"steps": 10, "batch_size": 8, "seq_len": 128, "safety_pairs": 16, "tool_pairs": 16,
            "on_policy_prompts": 16, "reward_pair_samples": 2},
    "rejection": {"samples_per_prompt": 2, "max_new_tokens": 16},
    "eval": {"limit": 8, "real_limit": 4, "refusal_prompts": 8, "tool_limit": 4},
    "safety": {"guard_steps": 6, "guard_examples": 40, "guard_eval": 8, "guard_batch_size": 2, "guard_seq_len": 1024,
               "guard_lr": 1e-3, "probe_prompts": 4, "max_new_tokens": 16},
    "final": {"transcripts": 2, "max_new_tokens": 16, "rm_prompts": 8},
}


def test_typed_presets_carry_the_numbers_of_the_old_dicts():
    assert to_dict(PRESETS["tiny"]()) == TINY
    expected = {k: {**v, **MICRO_CHANGES.get(k, {})} if isinstance(v, dict) else v for k, v in TINY.items()}
    assert to_dict(PRESETS["micro"]()) == expected
    gpu, node = PRESETS["gpu"](), PRESETS["node"]()
    assert (gpu.device, gpu.pretrain.steps, gpu.pretrain.compile, gpu.dpo.lr, gpu.tokenizer.vocab_size) == (
        "cuda", 5000, True, 1e-5, 128000)
    assert (node.pretrain.model["dim"], node.pretrain.steps, node.pretrain.activation_checkpointing,
            node.anneal.steps, node.sft.steps) == (1536, 10000, True, 1000, 1500)


def test_dtype_reaches_every_training_stage(tmp_path):
    config = preset_config("tiny", ["dtype=bfloat16"])
    ctx = RunContext(tmp_path, config)
    sources = {d: str(tmp_path / d) for d in (*config.pretrain.weights, "val")}
    ctx.manifests["tokenize"] = {"outputs": {"sources": sources}}
    ctx.manifests["anneal"] = {"outputs": {"model": str(tmp_path / "model")}}
    assert pretrain_config(ctx, tmp_path, config.pretrain, steps=100).dtype == "bfloat16"
    assert stage_fields(ctx, tmp_path, config.sft, str(tmp_path / "model"))["dtype"] == "bfloat16"
    assert RunContext(tmp_path, preset_config("tiny")).dtype == "auto"


def test_llama3_tokenizer_gives_uint32_shards(tmp_path):
    """The larger presets' tokenizer: Meta's 128K BPE, copied (not trained), its shards uint32."""
    from herd.speedrun.run import run_stages

    config = preset_config("micro", ["tokenizer.source=llama3", "progress=false"])
    assert PRESETS["gpu"]().tokenizer.source == PRESETS["node"]().tokenizer.source == "llama3"
    ctx = RunContext(tmp_path, config)
    run_stages(ctx, log=lambda _: None, until="tokenize")
    assert ctx.outputs("tokenizer")["vocab_size"] == 128000
    manifest = json.loads((Path(ctx.outputs("tokenize")["sources"]["math"]) / "manifest.json").read_text())
    assert manifest["dtype"] == "uint32" and ctx.outputs("tokenize")["tokens"]["math"] > 1000


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("speedrun") / "run"
    report = speedrun("micro", out, ["progress=false"])
    return out, report


def test_micro_spine_manifests_and_report(micro_run):
    out, report = micro_run
    for i, name in enumerate(STAGES, start=1):
        manifest = json.loads((out / f"{i:02d}-{name}" / "speedrun.json").read_text())
        assert manifest["complete"] and manifest["stage"] == name and manifest["duration_s"] >= 0
    text = report.read_text()
    for section in ("## Headline", "## Stages", "## Pretraining curves", "## What the data pipelines removed",
                    "## Evaluation", "## Safety (the final model)", "## Sample chat transcripts", "synth_math",
                    "2-digit addition probe", "unigram baseline", "Code Shield over the", "Llama Guard 2"):
        assert section in text
    assert (out / "curves.png").stat().st_size > 1000
    assert (out / "final" / "config.json").is_file() or any((out / "final").iterdir())
    anneal = json.loads((out / "06-anneal" / "speedrun.json").read_text())["outputs"]
    assert anneal["steps"] == micro().pretrain.steps + micro().anneal.steps
    assert anneal["new_tokens"] > 0  # the anneal continued pretraining's checkpoint, not a fresh run


def test_rejection_sampled_replies_feed_sft2_and_dpo_starts_from_it(micro_run):
    out, _ = micro_run
    manifests = {name: json.loads((out / f"{i:02d}-{name}" / "speedrun.json").read_text())
                 for i, name in enumerate(STAGES, start=1)}
    kept = [json.loads(line) for line in Path(manifests["rejection"]["outputs"]["output"]).read_text().splitlines()]
    mix_file = out / f"{list(STAGES).index('sft2') + 1:02d}-sft2" / "sft_mix.jsonl"
    mix = [json.loads(line)["messages"] for line in mix_file.read_text().splitlines()]
    assert manifests["sft2"]["outputs"]["rejection_dialogs"] == len(kept) > 0
    assert all(k["messages"] in mix for k in kept)
    dpo_config = json.loads((Path(manifests["dpo"]["outputs"]["model"]).parent / "manifest.json").read_text())["config"]
    assert dpo_config["model"] == manifests["sft2"]["outputs"]["model"]


def test_addition_probe_and_safety_scores(micro_run):
    out, _ = micro_run
    scores = json.loads((out / f"{list(STAGES).index('eval') + 1:02d}-eval" / "scores.json").read_text())["scores"]
    assert set(scores["synth_addition"]) >= {"base", "sft", "sft2", "dpo"}
    assert all(0.0 <= scores["synth_addition"][k] <= 1.0 for k in ("base", "sft", "sft2", "dpo"))
    safety = json.loads((out / f"{list(STAGES).index('safety') + 1:02d}-safety" / "safety.json").read_text())
    assert sum(safety["codeshield"]["verdicts"].values()) == safety["codeshield"]["n"] > 0
    guard = safety["guard"]
    assert guard["held_out"]["n"] == micro().safety.guard_eval and 0 <= guard["replies_flagged"] <= 1
    anneal = json.loads((out / "06-anneal" / "speedrun.json").read_text())["outputs"]["model"]
    sft_config = json.loads((Path(guard["guard"]).parent / "manifest.json").read_text())["config"]
    assert guard["base"] == sft_config["model"] == anneal  # the guard is the speedrun's base, fine-tuned
    assert guard["custom_taxonomies"]["n"] == micro().safety.guard_eval and "learned" in guard["held_out"]
    assert guard["probe_prompts"] == micro().safety.probe_prompts == 2 * guard["harmful_prompts"]  # half benign


def test_safety_data_reaches_sft_rm_dpo_and_refusals_are_measured(micro_run):
    out, report = micro_run
    stage = {name: out / f"{i:02d}-{name}" for i, name in enumerate(STAGES, start=1)}
    domains = [json.loads(line).get("domain") for line in (stage["sft"] / "sft_data.jsonl").read_text().splitlines()]
    assert domains.count("safety") == micro().sft.safety_dialogs
    mix = (stage["sft2"] / "sft_mix.jsonl").read_text()
    assert mix.count('"domain": "safety"') == micro().sft.safety_dialogs
    for name in ("rm", "dpo"):
        pairs = (stage[name] / "prefs.jsonl").read_text()
        assert pairs.count('"domain": "safety"') == getattr(micro(), name).safety_pairs
    on_policy = json.loads((stage["dpo"] / "speedrun.json").read_text())["outputs"]["on_policy"]
    assert on_policy["safety"]["requests"] == micro().dpo.on_policy_prompts and on_policy["reward"]["prompts"] > 0
    pairs = (stage["dpo"] / "prefs.jsonl").read_text()
    assert pairs.count('"domain": "safety_on_policy"') == on_policy["safety"]["pairs"]
    assert pairs.count('"domain": "reward"') == on_policy["reward"]["pairs"]
    scores = json.loads((stage["eval"] / "scores.json").read_text())
    assert set(scores["reward_interval"]) == {"sft", "sft2", "dpo"}
    assert all(r["low"] <= scores["reward"][k] <= r["high"] and r["n"] == 3 * micro().final.rm_prompts
               for k, r in scores["reward_interval"].items())  # stratified: math, harmful and benign prompts
    assert {kind: {k: r["n"] for k, r in rows.items()} for kind, rows in scores["reward_by_kind"].items()} == {
        kind: dict.fromkeys(("sft", "sft2", "dpo"), micro().final.rm_prompts) for kind in ("math", "harmful", "benign")}
    assert {"reward_math", "reward_harmful", "reward_benign"} <= set(scores["dpo_vs_sft2"])
    held_out = json.loads((stage["rm"] / "speedrun.json").read_text())["outputs"]["held_out"]
    assert set(held_out) == {"corpus", "harmful", "benign"} and all(0 <= v <= 1 for v in held_out.values())
    refusal = scores["refusal"]
    assert set(refusal) == {"base", "sft", "sft2", "dpo"}
    for rates in refusal.values():
        assert set(rates) == set(REFUSAL_KEYS)  # plain and adversarial (wrapped) requests
        for key in REFUSAL_KEYS:
            r = rates[key]
            assert r["n"] == micro().eval.refusal_prompts and r["low"] <= r["rate"] <= r["high"]
    text = report.read_text()
    assert "Refuses held-out harmful requests: base" in text and "benign look-alikes refused (false refusals)" in text
    assert "Adversarial (wrapped) requests: refuses harmful base" in text
    assert "annealed base fine-tuned by herd guard train's path" in text


def test_tool_dialogs_reach_sft_and_sft2_and_tools_are_scored_on_and_off(micro_run):
    out, report = micro_run
    stage = {name: out / f"{i:02d}-{name}" for i, name in enumerate(STAGES, start=1)}
    domains = [json.loads(line).get("domain") for line in (stage["sft"] / "sft_data.jsonl").read_text().splitlines()]
    assert domains.count("tools") == micro().sft.tool_dialogs
    assert (stage["sft2"] / "sft_mix.jsonl").read_text().count('"domain": "tools"') == micro().sft.tool_dialogs
    assert (stage["dpo"] / "prefs.jsonl").read_text().count('"domain": "tools"') == micro().dpo.tool_pairs
    assert '"domain": "tools"' not in (stage["rm"] / "prefs.jsonl").read_text()
    tools = json.loads((stage["eval"] / "scores.json").read_text())["tools"]
    assert set(tools) == {"synth_addition", "synth_math"}
    for name, row in tools.items():
        assert row["n"] == micro().eval.tool_limit and set(row) == {"metric", "n", "sft", "sft2", "dpo"}
        assert all(0 <= row[k]["exact_match"] <= 1 and 0 <= row[k]["called"] <= 1 for k in ("sft", "sft2", "dpo"))
        dialogs = [json.loads(line) for line in (stage["eval"] / "dpo" / f"samples_{name}_tools.jsonl").open()]
        assert len(dialogs) == row["n"] and all(d["messages"][0]["role"] == "user" for d in dialogs)
    text = report.read_text()
    assert "With the calculator tool offered (tools on, n=4): 2-digit addition SFT" in text
    assert "| synth_math | 8 / 4 |" in text and "Tools off / on" in text


def test_final_model_loads_and_chats(micro_run):
    import herd

    out, _ = micro_run
    model, tok = herd.load(str(out / "final"))
    ids = tok.encode_dialog([{"role": "user", "content": "What is 2 plus 3?"}])
    assert model(__import__("torch").tensor([ids])).shape[-1] >= tok.n_words


def test_rerun_skips_every_stage(micro_run):
    out, _ = micro_run
    logs: list[str] = []
    started = time.time()
    speedrun("micro", out, ["progress=false"], log=logs.append)
    assert time.time() - started < 20
    assert sum("skipped" in line for line in logs) == len(STAGES)


def test_changed_stage_reruns_it_and_what_follows(micro_run, tmp_path):
    out, _ = micro_run
    logs: list[str] = []
    speedrun("micro", out, ["progress=false", "final.transcripts=1"], log=logs.append)
    ran = [line.split()[1].rstrip(":") for line in logs if "running in" in line]
    assert ran == ["final"]


def test_stage_with_changed_settings_starts_afresh_and_an_interrupted_one_resumes(tmp_path):
    """A stage whose chain changed clears its dir (the old code resumed the old run's checkpoint under the new
    schedule: pretraining 6 steps picked up the finished 4-step run at step 4); an interrupted run of the same
    chain (its speedrun.json and library manifest gone, checkpoints left) resumes from its last checkpoint."""
    from herd.speedrun.run import run_stages

    def pretrain(steps: int) -> tuple[list[str], dict]:
        logs: list[str] = []
        config = preset_config("micro", ["progress=false", f"pretrain.steps={steps}", "pretrain.checkpoint_interval=2",
                                         "pretrain.eval_interval=2", "pretrain.warmup_steps=1"])
        run_stages(RunContext(tmp_path, config), log=logs.append, until="pretrain")
        return logs, json.loads((tmp_path / "05-pretrain" / "manifest.json").read_text())

    assert pretrain(4)[1]["resumed_from_step"] == 0
    logs, library = pretrain(6)
    assert library["resumed_from_step"] == 0 and library["steps"] == 6
    assert any("05-pretrain holds a run of other settings; cleared" in line for line in logs)
    for name in ("speedrun.json", "manifest.json"):
        (tmp_path / "05-pretrain" / name).unlink()
    logs, library = pretrain(6)
    assert not any("cleared" in line for line in logs) and sum("skipped" in line for line in logs) == 4
    assert library["resumed_from_step"] == 6
