"""`herd tokenizer train | tokenize | data run | data quality-train | data mix`: the pretraining data."""

import argparse


def add_tokenizer(commands: argparse._SubParsersAction) -> None:
    tokenizer = commands.add_parser("tokenizer", help="tokenizer tools").add_subparsers(
        dest="tokenizer_command", required=True, metavar="COMMAND"
    )
    train = tokenizer.add_parser("train", help="train a byte-level BPE tokenizer with Llama 3's split regex")
    train.add_argument("inputs", nargs="+", help="JSONL[.gz|.zst] / Parquet (a `text` field), text files or dirs")
    train.add_argument("--vocab-size", type=int, required=True, help="mergeable tokens (Meta's has 128,000)")
    train.add_argument("--out", required=True, help="the tiktoken-format file to write")
    train.add_argument("--no-progress", action="store_true")
    train.set_defaults(run=cmd_tokenizer_train)


def cmd_tokenizer_train(args: argparse.Namespace) -> None:
    from herd.data.readers import corpus_texts
    from herd.tokenizer.train_bpe import train_tokenizer

    out = train_tokenizer(corpus_texts(args.inputs)[1], args.vocab_size, args.out, show_progress=not args.no_progress)
    print(f"wrote a {args.vocab_size}-rank BPE tokenizer (+256 special tokens) to {out}")


def add_tokenize(commands: argparse._SubParsersAction) -> None:
    tokenize = commands.add_parser("tokenize", help="tokenize corpora into binary token shards")
    tokenize.add_argument("inputs", nargs="+", help="JSONL[.gz|.zst] / Parquet (a `text` field), text files or dirs")
    tokenize.add_argument("--out", required=True, help="output directory for the shards")
    tokenize.add_argument("--tokenizer", default=None, help="a BPE file or model dir (default: Meta's 128K)")
    tokenize.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    tokenize.add_argument("--shard-chars", type=int, default=2**28, help="input characters per shard")
    tokenize.add_argument("--no-progress", action="store_true")
    tokenize.set_defaults(run=cmd_tokenize)


def cmd_tokenize(args: argparse.Namespace) -> None:
    from herd.train.token_shards import tokenize_corpus

    manifest = tokenize_corpus(
        args.inputs, args.tokenizer, args.out, args.workers, shard_chars=args.shard_chars,
        show_progress=not args.no_progress,
    )
    print(f"wrote {manifest.num_tokens:,} tokens in {manifest.num_docs:,} documents to {args.out}")


def add_data(commands: argparse._SubParsersAction) -> None:
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
