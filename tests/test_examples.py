"""Every config under examples/ runs through `herd` as shipped, with tiny settings on the command line: conftest's
tiny model and tokenizer, a step or two, outputs in tmp dirs (the configs' own paths are relative to the repo root)."""

from pathlib import Path

import pytest

from herd.cli import main
from herd.train.token_shards import tokenize_corpus

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
STAGES = ("data", "pretrain", "sft", "rm", "rejection-sample", "dpo", "ppo", "grpo")
TINY_TRAINING = ("steps=2", "batch_size=2", "seq_len=64", "checkpoint_interval=0", "progress=false", "device=cpu")
TINY_RL = ("steps=1", "max_new_tokens=4", "prompts_per_rollout=2", "epochs=1", "seq_len=128", "checkpoint_interval=0",
           "progress=false", "device=cpu")


def herd(stage: str, *overrides: str) -> None:
    """`herd STAGE --config examples/STAGE.yaml OVERRIDES` (`herd data run examples/data.yaml` for data)."""
    config = str(EXAMPLES / f"{stage}.yaml")
    main(["data", "run", config, *overrides] if stage == "data" else [stage, "--config", config, *overrides])


@pytest.fixture(autouse=True)
def at_repo_root(monkeypatch):
    monkeypatch.chdir(REPO)


@pytest.fixture(scope="module")
def rm_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The reward model examples/rm.yaml trains, from the tiny model in two steps."""
    out = tmp_path_factory.mktemp("example_rm")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)
        herd("rm", f"out_dir={out}", f"model={tiny_model_dir}", *TINY_TRAINING)
    return out / "model"


def test_one_example_per_stage():
    assert sorted(p.stem for p in EXAMPLES.glob("*.yaml")) == sorted(STAGES)


def test_data(tmp_path, capsys):
    herd("data", f"output.dir={tmp_path}")
    assert "documents in" in capsys.readouterr().out and (tmp_path / "shard-00000.jsonl").is_file()


def test_pretrain(tmp_path, tiny_tok_path, capsys):
    tokenize_corpus([EXAMPLES / "data" / "raw.jsonl"], tiny_tok_path, tmp_path / "tokens", 1, show_progress=False)
    herd("pretrain", f"out_dir={tmp_path / 'run'}", f"data.sources.web={tmp_path / 'tokens'}", "optim.warmup_steps=1",
         *TINY_TRAINING)
    assert "pretrain finished" in capsys.readouterr().out and (tmp_path / "run" / "model").is_dir()


@pytest.mark.parametrize("stage", ["sft", pytest.param("dpo", marks=pytest.mark.slow)])  # dpo: ~10 s CPU
def test_fine_tuning(stage, tmp_path, tiny_model_dir, capsys):
    herd(stage, f"out_dir={tmp_path}", f"model={tiny_model_dir}", *TINY_TRAINING)
    assert f"{stage} finished" in capsys.readouterr().out and (tmp_path / "model").is_dir()


def test_rm(rm_dir):
    assert (rm_dir / "config.json").is_file() or any(rm_dir.iterdir())


def test_rejection_sample(tmp_path, tiny_model_dir, rm_dir):
    herd("rejection-sample", f"out_dir={tmp_path}", f"policy={tiny_model_dir}", f"reward_model={rm_dir}",
         "samples_per_prompt=2", "max_new_tokens=4", "progress=false", "device=cpu")
    assert len((tmp_path / "sft.jsonl").read_text().splitlines()) == 16  # the best reply of each sample prompt


def test_ppo(tmp_path, tiny_model_dir, rm_dir, capsys):
    herd("ppo", f"out_dir={tmp_path}", f"model={tiny_model_dir}", f"reward_model={rm_dir}", f"value_model={rm_dir}",
         "batch_size=2", *TINY_RL)
    assert "ppo finished" in capsys.readouterr().out and (tmp_path / "value").is_dir()


def test_grpo(tmp_path, tiny_model_dir, capsys):
    herd("grpo", f"out_dir={tmp_path}", f"model={tiny_model_dir}", "questions=4", "group_size=2", "batch_size=4",
         *TINY_RL)
    assert "grpo finished" in capsys.readouterr().out and (tmp_path / "model").is_dir()
