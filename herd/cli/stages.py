"""`herd speedrun | scaling | pretrain | sft | rm | rejection-sample | dpo | ppo | grpo`: training stages and the
recipes built on them."""

import argparse
import os
from collections import namedtuple


def add_speedrun(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("speedrun", help="the whole Llama 3 recipe end to end on the embedded corpus")
    run.add_argument("--preset", default="tiny", help="micro, tiny (2 CPU cores, <= 15 min), gpu, node")
    run.add_argument("--out", default="runs/speedrun", help="the run directory (a rerun resumes or skips)")
    run.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. pretrain.steps=800 progress=false")
    run.set_defaults(run=cmd_speedrun)


def cmd_speedrun(args: argparse.Namespace) -> None:
    from herd.speedrun import speedrun

    report = speedrun(preset=args.preset, out=args.out, overrides=args.overrides)
    if os.environ.get("RANK", "0") == "0":
        print(f"report card: {report}\nchat with the result: herd chat --model {report.parent / 'final'}")


def add_scaling(commands: argparse._SubParsersAction) -> None:
    scaling = commands.add_parser("scaling", help="scaling laws: isoFLOP sweeps, fits, predictions, data mixes")
    scaling_commands = scaling.add_subparsers(dest="scaling_command", required=True, metavar="COMMAND")
    for name, help_text in (("sweep", "train and score the isoFLOP runs, then fit and report"),
                            ("fit", "refit and redraw the report from the finished runs"),
                            ("predict", "predict loss and downstream scores at a target budget (--train: and measure)"),
                            ("mix", "data-mix experiments: pick the mix with the best predicted downstream score")):
        step = scaling_commands.add_parser(name, help=help_text)
        step.add_argument("--config", default=None, help="a YAML or JSON herd.scaling.ScalingConfig")
        step.add_argument("--preset", default=None, help="start from a preset: micro (2 CPU cores) or gpu")
        step.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. workers=2 budgets=[1e12,3e12]")
        if name in ("predict", "mix"):
            step.add_argument("--budget", type=float, default=None, help="target FLOPs (default: target_budget)")
        if name == "predict":
            step.add_argument("--train", action="store_true", help="also train the target run and compare")
        step.set_defaults(run=cmd_scaling)


def cmd_scaling(args: argparse.Namespace) -> None:
    from herd import scaling

    config = scaling.load_scaling_config(args.config, args.overrides, preset_name=args.preset)
    if args.scaling_command == "sweep":
        scaling.sweep(config)
    elif args.scaling_command == "fit":
        scaling.fit(config)
    elif args.scaling_command == "predict":
        scaling.predict_target(config, args.budget, train=args.train)
    else:
        scaling.mix(config, args.budget)


Stage = namedtuple("Stage", "help config example load")
"""A stage run as `herd NAME --config C key=value ...`: its help, its config class's name (for --help without
importing it; a test checks it), the overrides its help shows as an example (tests parse them), and `load`, which
imports its config class and entry function (torch-heavy, so only when it runs) and returns them."""


def _pretrain():
    from herd.train.config import PretrainConfig
    from herd.train.pretrain import pretrain

    return PretrainConfig, pretrain


def _sft():
    from herd.post.sft import SFTConfig, sft

    return SFTConfig, sft


def _rm():
    from herd.post.reward_model import RewardConfig, train_reward_model

    return RewardConfig, train_reward_model


def _rejection_sample():
    from herd.post.rejection_sampling import RejectionSamplingConfig, rejection_sample

    return RejectionSamplingConfig, rejection_sample


def _dpo():
    from herd.post.dpo import DPOConfig, dpo

    return DPOConfig, dpo


def _ppo():
    from herd.post.ppo import PPOConfig, ppo

    return PPOConfig, ppo


def _grpo():
    from herd.post.grpo import GRPOConfig, grpo

    return GRPOConfig, grpo


STAGES = {
    "pretrain": Stage("pretrain on token shards (torchrun too)", "PretrainConfig",
                      "data.sources.web=shards/web steps=200 optim.lr=1e-3", _pretrain),
    "sft": Stage("supervised fine-tuning on chat data (assistant tokens)", "SFTConfig",
                 "data=chat.jsonl steps=200 optim.lr=2e-5", _sft),
    "rm": Stage("train a reward model", "RewardConfig", "data=prefs.jsonl steps=200 optim.lr=1e-5", _rm),
    "rejection-sample": Stage(
        "sample K replies per prompt, keep the best by reward as SFT data", "RejectionSamplingConfig",
        "policy=runs/sft/model reward_model=runs/rm/model prompts=prompts.jsonl samples_per_prompt=8",
        _rejection_sample,
    ),
    "dpo": Stage("direct preference optimisation (Meta's variant)", "DPOConfig",
                 "data=prefs.jsonl beta=0.1 steps=200", _dpo),
    "ppo": Stage("PPO: policy + value on a reward model or a verifiable reward", "PPOConfig",
                 "reward=arithmetic kl_coef=0.05", _ppo),
    "grpo": Stage("group-baseline RL on verifiable rewards (e.g. arithmetic)", "GRPOConfig",
                  "reward=arithmetic group_size=8", _grpo),
}


def add_stages(commands: argparse._SubParsersAction) -> None:
    for name, stage in STAGES.items():
        parser = commands.add_parser(name, help=stage.help)
        parser.add_argument("--config", default=None, help=f"a YAML or JSON {stage.config}")
        parser.add_argument("overrides", nargs="*", metavar="key=value", help=f"e.g. {stage.example}")
        parser.set_defaults(run=cmd_stage)


def cmd_stage(args: argparse.Namespace) -> None:
    import dataclasses

    from herd.config_overrides import load_config

    config_class, run = STAGES[args.command].load()
    result = run(load_config(config_class, args.config, args.overrides))
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun, rank 0 reports
    fields = dataclasses.asdict(result) if dataclasses.is_dataclass(result) else result
    print(f"{args.command} finished:")
    for key, value in fields.items():
        print(f"  {key}: {value}")
