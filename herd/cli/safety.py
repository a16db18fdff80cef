"""`herd guard | codeshield | cyberseceval`: Llama Guard 2, Code Shield and CyberSecEval 2."""

import argparse
import json
import sys
from pathlib import Path

from herd.errors import HerdError


def add_guard(commands: argparse._SubParsersAction) -> None:
    guard = commands.add_parser("guard", help="moderate a text or conversation with a Llama Guard 2 model")
    guard.add_argument("--model", help="a Llama Guard 2 checkpoint or a guard herd trained")
    source = guard.add_mutually_exclusive_group()
    source.add_argument("--text", help="one message to judge")
    source.add_argument("--conversation", help="a JSON file: [{role, content}, ...]")
    guard.add_argument("--role", choices=("User", "Agent"), default="User", help="whose last message is judged")
    guard.add_argument("--categories", default=None, help='e.g. S1,S9,"Gambling: betting" (default: S1-S11)')
    guard.add_argument("--threshold", type=float, default=0.5, help="unsafe when P(unsafe) >= this")
    guard.set_defaults(run=cmd_guard)
    actions = guard.add_subparsers(dest="guard_command", metavar="{train,eval}")
    train = actions.add_parser("train", help="fine-tune a checkpoint into a Llama Guard 2-format guard by SFT")
    train.add_argument("--base", required=True, help="the starting model: anything herd.load reads")
    train.add_argument("--data", default=None, help="a JSONL of labelled messages added to herd's generated set: "
                                                    '{"text", "category" (name, S-code or null), "role", "context"}')
    train.add_argument("--out", required=True, help="run directory; the guard lands in OUT/model")
    train.add_argument("overrides", nargs="*", metavar="key=value",
                       help="GuardTrainConfig fields, e.g. sft.steps=200 sft.lora.rank=8 examples=2000")
    train.set_defaults(run=cmd_guard_train)
    score = actions.add_parser("eval", help="score a guard: F1, precision, recall, FPR, AUPRC vs base rate")
    score.add_argument("--model", dest="guard_model", required=True, help="the guard to score")
    score.add_argument("--data", default=None, help="a labelled JSONL (default: herd's held-out moderation set)")
    score.add_argument("--categories", dest="eval_categories", default=None,
                       help="the taxonomy for --data, written as guard's --categories (default: S1-S11)")
    score.add_argument("--held-out", type=int, default=200, help="held-out examples generated when no --data")
    score.set_defaults(run=cmd_guard_eval)


def cmd_guard(args: argparse.Namespace) -> None:
    from herd.safety.llama_guard import guard

    if not args.model or not (args.text or args.conversation):
        raise HerdError("herd guard needs --model and --text or --conversation (or: herd guard train | eval)")
    if args.conversation:
        try:
            conversation = json.loads(Path(args.conversation).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise HerdError(f"cannot read the conversation file {args.conversation}: {error}") from None
    else:
        conversation = args.text
    categories = [c.strip() for c in args.categories.split(",")] if args.categories else None
    verdict = guard(args.model, conversation, role=args.role, categories=categories, threshold=args.threshold)
    print(json.dumps(verdict, indent=2, default=str))


def cmd_guard_train(args: argparse.Namespace) -> None:
    from herd.config_overrides import load_config
    from herd.safety.guard_train import GuardTrainConfig, summary, train_guard_from_base

    settings = [f"base={args.base}", f"out_dir={args.out}"] + ([f"data={args.data}"] if args.data else [])
    result = train_guard_from_base(load_config(GuardTrainConfig, None, [*args.overrides, *settings]))
    print("\n".join([f"guard: {result['guard']}", *summary(result.get("held_out", {}))]))


def cmd_guard_eval(args: argparse.Namespace) -> None:
    from herd.safety.guard_train import score_guard, summary
    from herd.safety.taxonomy import taxonomy_from

    if args.held_out < 1:
        raise HerdError(f"--held-out must be at least 1, got {args.held_out}")
    categories = [c.strip() for c in args.eval_categories.split(",")] if args.eval_categories else None
    scores = score_guard(args.guard_model, args.data, args.held_out, taxonomy=taxonomy_from(categories))
    print("\n".join(summary(scores)))
    print(json.dumps(scores, indent=1))


def add_codeshield(commands: argparse._SubParsersAction) -> None:
    shield = commands.add_parser("codeshield", help="scan code for insecure patterns (exit 1 on BLOCK)")
    shield.add_argument("file", help="a source file, or - for stdin")
    shield.add_argument("--language", default=None, help="python, c, cpp, java, javascript, php, rust, ...")
    shield.set_defaults(run=cmd_codeshield)


def cmd_codeshield(args: argparse.Namespace) -> None:
    from herd.safety.codeshield import scan_file

    result = scan_file(args.file, args.language)
    print(json.dumps(result, indent=2))
    if result["verdict"] == "BLOCK":
        sys.exit(1)


def add_cyberseceval(commands: argparse._SubParsersAction) -> None:
    cse = commands.add_parser("cyberseceval", help="CyberSecEval 2: prompt injection, interpreter abuse, false refusals")
    under_test = cse.add_mutually_exclusive_group(required=True)
    under_test.add_argument("--model", help="a herd-loadable model to test")
    under_test.add_argument("--endpoint", help="an OpenAI-compatible base URL to test (ending in /v1)")
    cse.add_argument("--endpoint-model", default=None, help="the endpoint's model name (default: its first)")
    cse.add_argument("--api-key", default=None, help="the endpoints' bearer key")
    cse.add_argument("--judge", default=None, help="a herd-loadable judge model (default: the model under test)")
    cse.add_argument("--judge-endpoint", default=None, help="an OpenAI-compatible judge endpoint")
    cse.add_argument("--judge-endpoint-model", default=None)
    cse.add_argument("--data-dir", default=None, help="PurpleLlama's CybersecurityBenchmarks/datasets (else herd's cases)")
    cse.add_argument("--benchmarks", default="prompt_injection,interpreter,frr")
    cse.add_argument("--limit", type=int, default=None, help="cases per benchmark, spread over the set")
    cse.add_argument("--max-tokens", type=int, default=256,
                     help="reply tokens of the model under test; also caps the judge's answer (16 or 96 tokens)")
    cse.add_argument("--out", default="runs/cyberseceval")
    cse.set_defaults(run=cmd_cyberseceval)


def cmd_cyberseceval(args: argparse.Namespace) -> None:
    from herd.safety.cyberseceval import run_cyberseceval
    from herd.safety.cyberseceval_llm import EndpointChat, HerdChat

    def client(model: str | None, endpoint: str | None, name: str | None):
        return HerdChat.load(model) if model else EndpointChat(endpoint, name, args.api_key) if endpoint else None

    target = client(args.model, args.endpoint, args.endpoint_model)
    judge = client(args.judge, args.judge_endpoint, args.judge_endpoint_model)
    benchmarks = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
    run_cyberseceval(target, judge, args.out, data_dir=args.data_dir, benchmarks=benchmarks, limit=args.limit,
                     max_tokens=args.max_tokens)
    print((Path(args.out) / "cyberseceval.md").read_text(), end="")
