"""`herd speedrun | scaling | pretrain | sft | rm | rejection-sample | dpo | ppo | grpo`: training stages and the
recipes built on them."""

from __future__ import annotations

import argparse
import os


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


# Stages run as `herd STAGE --config C key=value ...`: (module, config class, stage function, help, example
# overrides shown in the help; tests/test_cli_help_examples.py parses them against the config class).
CONFIG_STAGES = {
    "pretrain": ("herd.train", "config:PretrainConfig", "pretrain:pretrain", "pretrain on token shards (torchrun too)",
                 "data.sources.web=shards/web steps=200 optim.lr=1e-3"),
    "sft": ("herd.post", "sft:SFTConfig", "sft:sft", "supervised fine-tuning on chat data (assistant tokens)",
            "data=chat.jsonl steps=200 optim.lr=2e-5"),
    "rm": ("herd.post", "reward_model:RewardConfig", "reward_model:train_reward_model", "train a reward model",
           "data=prefs.jsonl steps=200 optim.lr=1e-5"),
    "rejection-sample": (
        "herd.post", "rejection_sampling:RejectionSamplingConfig", "rejection_sampling:rejection_sample",
        "sample K replies per prompt, keep the best by reward as SFT data",
        "policy=runs/sft/model reward_model=runs/rm/model prompts=prompts.jsonl samples_per_prompt=8",
    ),
    "dpo": ("herd.post", "dpo:DPOConfig", "dpo:dpo", "direct preference optimisation (Meta's variant)",
            "data=prefs.jsonl beta=0.1 steps=200"),
    "ppo": ("herd.post", "ppo:PPOConfig", "ppo:ppo", "PPO: policy + value on a reward model or a verifiable reward",
            "reward=arithmetic kl_coef=0.05"),
    "grpo": ("herd.post", "grpo:GRPOConfig", "grpo:grpo", "group-baseline RL on verifiable rewards (e.g. arithmetic)",
             "reward=arithmetic group_size=8"),
}


def _attribute(package: str, spec: str):
    import importlib

    module, name = spec.split(":")
    return getattr(importlib.import_module(f"{package}.{module}"), name)


def add_config_stages(commands: argparse._SubParsersAction) -> None:
    for name, (_, config_spec, _, help_text, example) in CONFIG_STAGES.items():
        stage = commands.add_parser(name, help=help_text)
        stage.add_argument("--config", default=None, help=f"a YAML or JSON {config_spec.split(':')[1]}")
        stage.add_argument("overrides", nargs="*", metavar="key=value", help=f"e.g. {example}")
        stage.set_defaults(run=cmd_config_stage)


def cmd_config_stage(args: argparse.Namespace) -> None:
    import dataclasses

    from herd.config_overrides import load_config

    package, config_spec, run_spec, *_ = CONFIG_STAGES[args.command]
    config = load_config(_attribute(package, config_spec), args.config, args.overrides)
    result = _attribute(package, run_spec)(config)
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun, rank 0 reports
    fields = dataclasses.asdict(result) if dataclasses.is_dataclass(result) else result
    print(f"{args.command} finished:")
    for key, value in fields.items():
        print(f"  {key}: {value}")
