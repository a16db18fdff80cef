"""SFT training tokens/s on CPU (fp32): herd's `sft` stage vs TRL's `SFTTrainer`, and their loss curves.

Same model (one random init, saved in herd and HF format), same data (GSM8K test problems as chat dialogs through
`task:gsm8k/eval`, loss on assistant tokens only), same packed rows in the same order, same optimizer and LR schedule.
herd packs dialogs into rows with document masks; TRL gets those very rows pre-tokenized (labels -100 off the
assistant tokens, `seq_lengths` per row) and runs its packed, padding-free path, so the losses should agree step by
step. Throughput is real (non-padding) tokens per second between the ends of steps 2..N, median over `--runs`
interleaved runs. TRL runs as its docs recommend for this case (PEER_SETTINGS: no activation checkpointing, fp32
without bf16 autocast, SDPA attention), its settings printed beside the figure; when herd comes out more than 2x
ahead, one more TRL run is profiled and its top ops printed.
Usage: python benchmarks/post_sft_cpu.py [--data-dir ../shared/data/benchmarks --steps 8 --runs 3 ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import herd
from herd.data.readers import corpus_texts
from herd.model import ModelConfig, build_model
from herd.post.batches import Batches, PackedChats, pack_chats
from herd.post.data import read_chats
from herd.post.sft import SFTConfig, sft
from herd.tokenizer import Tokenizer
from herd.tokenizer.train_bpe import train_tokenizer
from herd.train.metrics import MetricsLog, read_records
from herd.train.packing import IGNORE_INDEX

from cpu_info import cpu_line
from peer_profile import explain

# TRL as its docs recommend for this case (fp32 on CPU, a small model whose activations fit in memory): TRL 1.x's
# SFTConfig turns activation checkpointing and bf16 autocast on by default; both are for memory-bound GPU runs.
# Padding-free (flattened rows, dialogs kept apart by position_ids) is TRL's only path that keeps packed dialogs
# from attending to each other, i.e. the same math as herd's document masks; attention is HF's SDPA, its fastest
# on CPU (FlashAttention is GPU-only).
PEER_SETTINGS = {"activation_checkpointing": False, "bf16": False}  # TRL defaults: True, True


def row_example(rows: PackedChats, index: int, eos_id: int) -> dict[str, list]:
    """A herd row as TRL's packed example: each dialog's ids (inputs + its last token) and labels (the token where
    herd trains on predicting it, else -100), and the dialogs' lengths; the row's padding is left out."""
    tokens, targets, docs = (t[index].tolist() for t in (rows.tokens, rows.targets, rows.doc_ids))
    ids, labels, lengths, start = [], [], [], 0
    while start < len(tokens):
        end = start + 1
        while end < len(tokens) and docs[end] == docs[start]:
            end += 1
        doc_targets = targets[start:end]
        if all(t == IGNORE_INDEX for t in doc_targets):
            break  # the padding at the row's end
        ids += tokens[start:end] + [doc_targets[-1] if doc_targets[-1] != IGNORE_INDEX else eos_id]
        labels += [IGNORE_INDEX] + doc_targets
        lengths.append(end - start + 1)
        start = end
    return {"input_ids": ids, "labels": labels, "seq_lengths": lengths}


def run_herd(args: argparse.Namespace, work: Path, run: int) -> tuple[list[float], list[float]]:
    """One herd SFT run: (loss of each step, wall time at the end of each step)."""
    stamps = []
    write = MetricsLog.write

    def stamped(self: MetricsLog, record: dict) -> None:
        write(self, record)
        stamps.append(time.perf_counter())

    config = SFTConfig(
        out_dir=str(work / f"herd-{run}"), model=str(work / "herd-model"), data=str(work / "dialogs.jsonl"),
        steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len, seed=0, device="cpu", dtype="float32",
        checkpoint_interval=0, resume=False, progress=False,
    )
    config.optim.lr, config.optim.warmup_steps, config.optim.min_lr_ratio = args.lr, 0, 0.1
    MetricsLog.write = stamped
    try:
        result = sft(config)
    finally:
        MetricsLog.write = write
    losses = [r["loss"] for r in read_records(result.run_dir / "metrics.jsonl") if "loss" in r]
    return losses, stamps


def run_trl(args: argparse.Namespace, work: Path, run: int, examples: list[dict]) -> tuple[list[float], list[float]]:
    """One TRL SFTTrainer run on the same rows in the same order: (loss of each step, time at each step's end)."""
    from datasets import Dataset
    from transformers import AutoTokenizer, LlamaForCausalLM, TrainerCallback
    from trl import SFTConfig as TRLConfig
    from trl import SFTTrainer

    stamps = []

    class Stamp(TrainerCallback):
        def on_step_end(self, *_: object, **__: object) -> None:
            stamps.append(time.perf_counter())

    model = LlamaForCausalLM.from_pretrained(work / "hf-model", dtype=torch.float32, attn_implementation="sdpa")
    config = TRLConfig(
        output_dir=str(work / f"trl-{run}"), per_device_train_batch_size=args.batch_size, max_steps=args.steps,
        learning_rate=args.lr, lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": 0.1},
        warmup_steps=0, weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.95, adam_epsilon=1e-8, max_grad_norm=1.0,
        packing=False, padding_free=True, max_length=None, train_sampling_strategy="sequential", seed=0,
        logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
        dataloader_num_workers=0, **PEER_SETTINGS,
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(examples),
                         processing_class=AutoTokenizer.from_pretrained(work / "hf-model"), callbacks=[Stamp()])
    if run == 0:
        settings = [f"{k}={getattr(config, k)}" for k in PEER_SETTINGS] + [
            f"padding_free={config.padding_free}", f"optim={config.optim}",
            f"attention={model.config._attn_implementation}"]
        print(f"TRL SFTTrainer settings: {', '.join(settings)}")
    trainer.train()
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    return losses, stamps


def steady_tokens_per_s(stamps: list[float], tokens: list[int]) -> float:
    """Tokens of steps 2..N over the time from the end of step 1 to the end of step N."""
    return sum(tokens[1:]) / (stamps[-1] - stamps[0])


def prepare(args: argparse.Namespace, work: Path) -> tuple[list[dict], list[int]]:
    """Write the dialogs, a tokenizer trained on them and the model (herd and HF format); return TRL's examples in
    herd's batch order and the real tokens of each step."""
    dialogs = read_chats(f"task:gsm8k/eval@{args.data_dir}")
    with (work / "dialogs.jsonl").open("w") as f:
        f.writelines(json.dumps({"messages": d}) + "\n" for d in dialogs)
    with (work / "corpus.jsonl").open("w") as f:
        f.writelines(json.dumps({"text": m["content"]}) + "\n" for d in dialogs for m in d)
    tok = Tokenizer(train_tokenizer(corpus_texts([work / "corpus.jsonl"])[1], args.vocab, work / "tok.model", show_progress=False))
    config = ModelConfig(dim=args.dim, n_layers=args.layers, n_heads=args.heads, n_kv_heads=args.kv_heads,
                         vocab_size=tok.n_words, multiple_of=32, ffn_dim_multiplier=None, max_seq_len=args.seq_len)
    model = build_model(config)
    model.init_weights(0)
    herd.save(model, tok, work / "herd-model")
    herd.save(model, tok, work / "hf-model", format="hf")
    rows = pack_chats(tok, dialogs, args.seq_len)
    order = Batches(len(rows), args.batch_size, 0, list)  # the order herd's sft draws rows in (seed 0)
    examples = [row_example(rows, i, tok.eos_id) for _ in range(args.steps) for i in next(order)]
    step_tokens = [sum(len(e["input_ids"]) - len(e["seq_lengths"]) for e in examples[s : s + args.batch_size])
                   for s in range(0, len(examples), args.batch_size)]  # herd's inputs: each dialog but its last id
    fill = sum(step_tokens) / (args.steps * args.batch_size * args.seq_len)
    print(f"{len(dialogs)} dialogs, {len(rows)} packed rows of {args.seq_len} ({fill:.0%} real tokens), "
          f"{rows.truncated} truncated; vocab {tok.n_words}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params")
    return examples, step_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data/benchmarks", help="holds gsm8k/test.jsonl")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8192, help="BPE ranks trained on the dialogs (+256 specials)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-4)
    args = parser.parse_args()
    if not (Path(args.data_dir) / "gsm8k").is_dir():
        sys.exit(f"skipped: no GSM8K data in {args.data_dir}/gsm8k (see ../shared/data/README.md); pass --data-dir")
    print(cpu_line())
    work = Path(tempfile.mkdtemp(prefix="post_sft_cpu-"))
    examples, step_tokens = prepare(args, work)
    speeds: dict[str, list[float]] = {"herd": [], "trl": []}
    curves: dict[str, list[float]] = {}
    for run in range(args.runs):
        for name, values in speeds.items():
            losses, stamps = run_herd(args, work, run) if name == "herd" else run_trl(args, work, run, examples)
            assert len(stamps) == args.steps and len(losses) == args.steps, (name, len(stamps), len(losses))
            values.append(steady_tokens_per_s(stamps, step_tokens))
            curves.setdefault(name, losses)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; model dim {args.dim} x {args.layers} layers, "
          f"batch {args.batch_size} x {args.seq_len}, {args.steps} steps, lr {args.lr}, fp32")
    print("\nstep | herd loss | trl loss | |diff|")
    for step, (a, b) in enumerate(zip(curves["herd"], curves["trl"]), 1):
        print(f"{step:4d} | {a:9.5f} | {b:8.5f} | {abs(a - b):.2e}")
    worst = max(abs(a - b) / b for a, b in zip(curves["herd"], curves["trl"]))
    print(f"largest relative loss difference: {worst:.2e}\n")
    medians = {name: statistics.median(values) for name, values in speeds.items()}
    for name, values in speeds.items():
        print(f"{name:>5}: median {medians[name]:8.0f} tokens/s  (runs: {', '.join(f'{v:.0f}' for v in values)})")
    ratio = medians["herd"] / medians["trl"]
    print(f"ratio herd / trl: {ratio:.2f}x")
    explain(ratio, "TRL's SFTTrainer", lambda: run_trl(args, work, args.runs, examples), rows=15)


if __name__ == "__main__":
    main()
