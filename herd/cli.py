"""The `herd` command: parses arguments and calls one function per subcommand.

Errors a user can cause end in one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from herd.errors import HerdError

DTYPES = ("float32", "bfloat16", "float16")


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a Meta, HF or herd directory, a Hub id, or a preset name")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--dtype", choices=DTYPES, default=None, help="cast the weights (default: as stored)")


def _add_sampling_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-new-tokens", type=int, default=256, help="(default: %(default)s)")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="sampling temperature (default: %(default)s, greedy decoding)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling (default: %(default)s, no cut)")
    parser.add_argument("--top-k", type=int, default=0, help="0 means no top-k cut")
    parser.add_argument("--seed", type=int, default=0)


def _load(args: argparse.Namespace):
    import torch

    import herd

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype) if args.dtype else None
    return herd.load(args.model, device=device, dtype=dtype)


def _sampling(args: argparse.Namespace) -> dict:
    return dict(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        seed=args.seed,
    )


def cmd_speedrun(args: argparse.Namespace) -> None:
    from herd.speedrun import speedrun

    report = speedrun(preset=args.preset, out=args.out, overrides=args.overrides)
    if os.environ.get("RANK", "0") == "0":
        print(f"report card: {report}\nchat with the result: herd chat --model {report.parent / 'final'}")


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


def cmd_generate(args: argparse.Namespace) -> None:
    import herd

    model, tok = _load(args)
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    herd.generate(
        model, tok, prompt, stop=args.stop or None, chat=args.chat, **_sampling(args),
        on_text=lambda _row, piece: print(piece, end="", flush=True),
    )
    print()


def cmd_chat(args: argparse.Namespace) -> None:
    from herd.chat import run_chat

    model, tok = _load(args)
    run_chat(model, tok, sys.stdin, sys.stdout, system=args.system, **_sampling(args))


def cmd_convert(args: argparse.Namespace) -> None:
    from herd.checkpoint import convert

    out = convert(args.model, args.out, to=args.to, dtype=args.dtype, outtype=args.outtype)
    print(f"wrote {args.to} checkpoint to {out}")


def cmd_info(args: argparse.Namespace) -> None:
    from herd.checkpoint import info

    details = info(args.model)
    if args.json:
        print(json.dumps(details, indent=2, default=str))
        return
    width = max(len(k) for k in details)
    for key, value in details.items():
        print(f"{key:<{width}}  {value}")


def cmd_tokenizer_train(args: argparse.Namespace) -> None:
    from herd.data.readers import corpus_texts
    from herd.tokenizer.train_bpe import train_tokenizer

    out = train_tokenizer(corpus_texts(args.inputs)[1], args.vocab_size, args.out, show_progress=not args.no_progress)
    print(f"wrote a {args.vocab_size}-rank BPE tokenizer (+256 special tokens) to {out}")


def cmd_tokenize(args: argparse.Namespace) -> None:
    from herd.train.token_shards import tokenize_corpus

    manifest = tokenize_corpus(
        args.inputs, args.tokenizer, args.out, args.workers, shard_chars=args.shard_chars,
        show_progress=not args.no_progress,
    )
    print(f"wrote {manifest.num_tokens:,} tokens in {manifest.num_docs:,} documents to {args.out}")


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


def cmd_average(args: argparse.Namespace) -> None:
    from herd.post.averaging import average_checkpoints

    print(f"wrote the average of {len(args.models)} checkpoints to {average_checkpoints(args.models, args.out)}")


def cmd_data_run(args: argparse.Namespace) -> None:
    from herd.data.pipeline import run_pipeline

    stats = run_pipeline(args.pipeline, overrides=args.overrides)
    first, last = stats[0], stats[-1]
    print(f"data pipeline done: {first.docs_in:,} documents in, {last.docs_out:,} out; see stats.json and report.md")


def cmd_data_quality_train(args: argparse.Namespace) -> None:
    from herd.data.quality_model import train_quality

    classifier = train_quality(args.config)
    print(", ".join(f"{key} {value}" for key, value in classifier.metrics.items()))


def cmd_data_mix(args: argparse.Namespace) -> None:
    from herd.data.mixing import render_mix_report, run_mix

    print(render_mix_report(run_mix(args.config)))


def cmd_serve(args: argparse.Namespace) -> None:
    from herd.serve.scheduler import EngineConfig
    from herd.serve.server import resolve_api_key, serve

    limits = {name: getattr(args, name) for name in ("max_body_bytes", "header_timeout")
              if getattr(args, name) is not None}
    guardrails = None
    if args.guard or args.code_shield:
        from herd.serve.guardrails import Guardrails

        guardrails = Guardrails.load(args.guard, code_shield=args.code_shield)
    serve(
        args.model, args.host, args.port, resolve_api_key(args.api_key, args.api_key_file),
        engine_config=EngineConfig(max_running=args.max_running), max_queue=args.max_queue,
        max_prompt_tokens=args.max_prompt_tokens, quantize=args.quantize, guardrails=guardrails, **limits,
    )


def cmd_guard(args: argparse.Namespace) -> None:
    from herd.safety.llama_guard import guard

    if args.conversation:
        from pathlib import Path

        try:
            conversation = json.loads(Path(args.conversation).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise HerdError(f"cannot read the conversation file {args.conversation}: {error}") from None
    else:
        conversation = args.text
    categories = [c.strip() for c in args.categories.split(",")] if args.categories else None
    verdict = guard(args.model, conversation, role=args.role, categories=categories, threshold=args.threshold)
    print(json.dumps(verdict, indent=2, default=str))


def cmd_codeshield(args: argparse.Namespace) -> None:
    from herd.safety.codeshield import scan_file

    result = scan_file(args.file, args.language)
    print(json.dumps(result, indent=2))
    if result["verdict"] == "BLOCK":
        sys.exit(1)


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


def cmd_eval(args: argparse.Namespace) -> None:
    from herd.eval.data import MissingData
    from herd.eval.runner import run_eval

    try:
        run_eval(
            args.model, [t.strip() for t in args.tasks.split(",") if t.strip()], args.data_dir, limit=args.limit,
            out_dir=args.out, chat=args.chat, batch_size=args.batch_size, seed=args.seed,
        )
    except MissingData as error:
        raise HerdError(f"{error}; or point --data-dir (now {args.data_dir}) at a directory that holds it") from None
    print(f"wrote results.json, results.md and per-sample records to {args.out}")


def cmd_eval_pairwise(args: argparse.Namespace) -> None:
    import os

    from herd.eval.pairwise import run_pairwise

    summary = run_pairwise(
        args.model_a, args.model_b, args.judge, judge_url=args.judge_url,
        judge_api_key=os.environ.get(args.judge_api_key_env, "EMPTY"), prompts_path=args.prompts,
        per_category=args.per_category, max_new_tokens=args.max_new_tokens,
        judge_max_new_tokens=args.judge_max_new_tokens, batch_size=args.batch_size, out_dir=args.out,
    )
    print(json.dumps(summary["overall"]))
    print(f"wrote pairwise.json and pairwise.md to {args.out}")


class _TaskListHelp(argparse.HelpFormatter):
    """Writes herd.eval's task registry into help texts at "{tasks}", importing it (and torch) only when the help
    is shown, so the list cannot drift from the tasks `herd eval` knows."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = super()._get_help_string(action) or ""
        if "{tasks}" in text:
            from herd.eval.tasks import TASKS

            text = text.replace("{tasks}", ", ".join(TASKS))
        return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="herd", description="The whole Llama 3 system, PyTorch-native.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("speedrun", help="the whole Llama 3 recipe end to end on the embedded corpus")
    run.add_argument("--preset", default="tiny", help="micro, tiny (2 CPU cores, <= 15 min), gpu, node")
    run.add_argument("--out", default="runs/speedrun", help="the run directory (a rerun resumes or skips)")
    run.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. pretrain.steps=800 progress=false")
    run.set_defaults(run=cmd_speedrun)

    gen = commands.add_parser("generate", help="complete a prompt")
    _add_model_args(gen)
    gen.add_argument("--prompt", required=True, help="the prompt text, or - to read it from stdin")
    gen.add_argument("--stop", action="append", help="a stop string (repeatable)")
    gen.add_argument("--chat", action="store_true", help="wrap the prompt as a user turn in the chat format")
    _add_sampling_args(gen)
    gen.set_defaults(run=cmd_generate)

    chat = commands.add_parser("chat", help="talk to a model in the Llama 3 chat format (reads stdin)")
    _add_model_args(chat)
    chat.add_argument("--system", default=None, help="a system prompt")
    _add_sampling_args(chat)
    chat.set_defaults(run=cmd_chat)

    convert = commands.add_parser("convert", help="convert a checkpoint between formats")
    convert.add_argument("--model", required=True, help="the checkpoint to read (any format herd.load takes)")
    convert.add_argument("--to", required=True, choices=("herd", "hf", "meta", "gguf"))
    convert.add_argument("--out", required=True, help="output directory (the .gguf file for --to gguf)")
    convert.add_argument(
        "--outtype", choices=("f32", "f16", "bf16", "q8_0"), help="GGUF tensor type (default: the stored dtype)"
    )
    convert.add_argument("--dtype", choices=DTYPES, default=None, help="cast the weights (default: as stored)")
    convert.set_defaults(run=cmd_convert)

    tokenizer = commands.add_parser("tokenizer", help="tokenizer tools").add_subparsers(
        dest="tokenizer_command", required=True, metavar="COMMAND"
    )
    train = tokenizer.add_parser("train", help="train a byte-level BPE tokenizer with Llama 3's split regex")
    train.add_argument("inputs", nargs="+", help="JSONL[.gz|.zst] / Parquet (a `text` field), text files or dirs")
    train.add_argument("--vocab-size", type=int, required=True, help="mergeable tokens (Meta's has 128,000)")
    train.add_argument("--out", required=True, help="the tiktoken-format file to write")
    train.add_argument("--no-progress", action="store_true")
    train.set_defaults(run=cmd_tokenizer_train)

    tokenize = commands.add_parser("tokenize", help="tokenize corpora into binary token shards")
    tokenize.add_argument("inputs", nargs="+", help="JSONL[.gz|.zst] / Parquet (a `text` field), text files or dirs")
    tokenize.add_argument("--out", required=True, help="output directory for the shards")
    tokenize.add_argument("--tokenizer", default=None, help="a BPE file or model dir (default: Meta's 128K)")
    tokenize.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    tokenize.add_argument("--shard-chars", type=int, default=2**28, help="input characters per shard")
    tokenize.add_argument("--no-progress", action="store_true")
    tokenize.set_defaults(run=cmd_tokenize)

    data = commands.add_parser("data", help="the pretraining data pipeline").add_subparsers(
        dest="data_command", required=True, metavar="COMMAND"
    )
    data_run = data.add_parser("run", help="run a pipeline of readers, filters, dedup and writers")
    data_run.add_argument("pipeline", help="the pipeline YAML file")
    data_run.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. workers=4 output.dir=clean/")
    data_run.set_defaults(run=cmd_data_run)
    quality = data.add_parser("quality-train", help="label a sample with a teacher and train a quality classifier")
    quality.add_argument("config", help="the YAML config (input, out, teacher, sample, held_out, classifier)")
    quality.set_defaults(run=cmd_data_quality_train)
    mix = data.add_parser("mix", help="sample cleaned sources by weight into a token budget")
    mix.add_argument("config", help="the YAML config (out_dir, token_budget, sources with weights)")
    mix.set_defaults(run=cmd_data_mix)

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

    for name, (_, config_spec, _, help_text, example) in CONFIG_STAGES.items():
        stage = commands.add_parser(name, help=help_text)
        stage.add_argument("--config", default=None, help=f"a YAML or JSON {config_spec.split(':')[1]}")
        stage.add_argument("overrides", nargs="*", metavar="key=value", help=f"e.g. {example}")
        stage.set_defaults(run=cmd_config_stage)
    average = commands.add_parser("average", help="average the weights of several checkpoints")
    average.add_argument("models", nargs="+", help="checkpoint directories of one architecture")
    average.add_argument("--out", required=True, help="output directory")
    average.set_defaults(run=cmd_average)

    evaluate = commands.add_parser("eval", help="score a model on the Llama 3 release's benchmarks",
                                   formatter_class=_TaskListHelp)
    evaluate.add_argument("--model", required=True, help="a Meta, HF or herd directory, a Hub id, or a preset name")
    evaluate.add_argument("--tasks", required=True, help="comma-separated: {tasks}")
    evaluate.add_argument("--data-dir", default="data/benchmarks",
                          help="where the benchmark files are (default: %(default)s)")
    evaluate.add_argument("--limit", type=int, default=None, help="at most N samples per task")
    evaluate.add_argument("--out", default="eval_out", help="output directory")
    evaluate.add_argument("--chat", action="store_true", help="prompt in the chat format (instruct models)")
    evaluate.add_argument("--batch-size", type=int, default=8)
    evaluate.add_argument("--seed", type=int, default=0, help="few-shot sampling seed")
    evaluate.set_defaults(run=cmd_eval)

    pairwise = commands.add_parser("eval-pairwise", help="human-preference style: a judge compares two models' replies")
    pairwise.add_argument("--model-a", required=True, help="a Meta, HF or herd directory, a Hub id, or a preset")
    pairwise.add_argument("--model-b", required=True, help="a Meta, HF or herd directory, a Hub id, or a preset")
    pairwise.add_argument("--judge", required=True, help="a herd-loadable model, or the model name at --judge-url")
    pairwise.add_argument("--judge-url", default=None, help="an OpenAI-compatible endpoint, e.g. http://host:8000/v1")
    pairwise.add_argument("--judge-api-key-env", default="OPENAI_API_KEY", help="the variable holding its API key")
    pairwise.add_argument("--prompts", default=None, help="a JSONL prompt set (default: herd's 12-category set)")
    pairwise.add_argument("--per-category", type=int, default=None, help="at most N prompts per category")
    pairwise.add_argument("--max-new-tokens", type=int, default=512, help="reply length of models A and B")
    pairwise.add_argument("--judge-max-new-tokens", type=int, default=512)
    pairwise.add_argument("--batch-size", type=int, default=8)
    pairwise.add_argument("--out", default="eval_pairwise_out", help="output directory")
    pairwise.set_defaults(run=cmd_eval_pairwise)

    serve = commands.add_parser("serve", help="an OpenAI-compatible server with a web chat at /")
    serve.add_argument("--model", required=True, help="a Meta, HF or herd directory, a Hub id, or a preset name")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key", default=None,
                       help="require this bearer key (401 otherwise); `ps` shows it: prefer --api-key-file or "
                       "$HERD_API_KEY")
    serve.add_argument("--api-key-file", default=None, help="require the key held in this file")
    serve.add_argument("--max-body-bytes", type=int, default=None, help="larger request bodies get 413 (default 4 MiB)")
    serve.add_argument("--header-timeout", type=float, default=None,
                       help="seconds a client gets to send a request's headers (default 10)")
    serve.add_argument("--max-running", type=int, default=32, help="requests decoding together")
    serve.add_argument("--max-queue", type=int, default=64, help="waiting requests before 429")
    serve.add_argument("--max-prompt-tokens", type=int, default=None, help="longer prompts get 400")
    serve.add_argument("--quantize", choices=("int8",), default=None, help="int8 weight-only linears")
    serve.add_argument("--guard", default=None, help="a Llama Guard model checking each user turn and reply")
    serve.add_argument("--code-shield", action="store_true", help="refuse replies whose code Code Shield blocks")
    serve.set_defaults(run=cmd_serve)

    guard = commands.add_parser("guard", help="moderate a text or conversation with a Llama Guard 2 model")
    guard.add_argument("--model", required=True, help="a Llama Guard 2 checkpoint or a guard herd trained")
    source = guard.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="one message to judge")
    source.add_argument("--conversation", help="a JSON file: [{role, content}, ...]")
    guard.add_argument("--role", choices=("User", "Agent"), default="User", help="whose last message is judged")
    guard.add_argument("--categories", default=None, help='e.g. S1,S9,"Gambling: betting" (default: S1-S11)')
    guard.add_argument("--threshold", type=float, default=0.5, help="unsafe when P(unsafe) >= this")
    guard.set_defaults(run=cmd_guard)

    shield = commands.add_parser("codeshield", help="scan code for insecure patterns (exit 1 on BLOCK)")
    shield.add_argument("file", help="a source file, or - for stdin")
    shield.add_argument("--language", default=None, help="python, c, cpp, java, javascript, php, rust, ...")
    shield.set_defaults(run=cmd_codeshield)

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

    info = commands.add_parser("info", help="describe a checkpoint or preset")
    info.add_argument("model")
    info.add_argument("--json", action="store_true")
    info.set_defaults(run=cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], None] = args.run
    try:
        with warnings.catch_warnings():  # restores Python's own warning display when done
            warnings.showwarning = _show_warning
            run(args)
        sys.stdout.flush()  # a closed pipe raises here, not at exit where it cannot be caught
    except HerdError as error:
        print(f"herd: error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:  # the reader left (`herd ... | head`): stop quietly, as Python's docs on SIGPIPE advise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


def _show_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
    """A warning as one line on stderr (`herd: warning: ...`), not Python's file:line and source line."""
    print(f"herd: warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    main()
