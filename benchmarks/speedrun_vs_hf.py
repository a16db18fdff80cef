"""Quality at equal compute: the speedrun's pretraining stage vs a plain HF `LlamaForCausalLM` + torch AdamW loop.

Both get the same token data (the speedrun preset's token shards, read through herd's own data loader: the same
batches, same targets), the same model size and the same wall-clock on this machine: herd's pretraining stage runs
`--steps` steps (its config: document-masked attention, warmup + cosine schedule, AdamW with Llama 3's betas and
decay, Llama init), and the HF loop then trains for as long as herd's whole stage took (model build, validation and
checkpointing included), at a constant LR with torch's fused AdamW (HF Trainer's default), on the packed rows
without document masks.
Both are scored on the same validation batches (nats per token). Runs alternate herd / HF `--runs` times (seeds
0, 1, ...) and the medians are compared. The HF loop's settings (PEER_SETTINGS: SDPA attention, fp32 like herd's CPU
default, no activation checkpointing) and the CPU are printed beside the figures, with the steps each side took; where
herd took more than 2x the HF loop's steps per second, a few HF steps are profiled and their top ops printed.

Usage: python benchmarks/speedrun_vs_hf.py [--preset tiny] [--steps 150] [--runs 2] [--work /tmp/speedrun_vs_hf]
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from cpu_info import cpu_line
from peer_profile import SUSPICIOUS, explain

from herd.speedrun import preset_config
from herd.speedrun.run import RunContext, run_stages
from herd.speedrun.train_stages import pretrain_config
from herd.train.data_loader import DataLoaderConfig, TokenDataLoader


PEER_SETTINGS = ("LlamaForCausalLM attention=sdpa, fp32, activation checkpointing off, torch.optim.AdamW(fused=True, "
                 "default betas and decay) at the preset's LR, constant, no document masks")


def run_herd(ctx: RunContext, out: Path, steps: int, seed: int) -> tuple[float, float, float]:
    """herd's pretraining stage for `steps` steps: (val loss, wall seconds, CPU seconds)."""
    from herd.train.pretrain import pretrain

    shutil.rmtree(out, ignore_errors=True)  # a fresh run, never a resumed one
    s = dataclasses.replace(ctx.config.pretrain, eval_interval=steps, checkpoint_interval=steps)
    config = pretrain_config(ctx, out, s, steps=steps)
    config.seed = seed
    wall, cpu = time.perf_counter(), time.process_time()
    result = pretrain(config)
    return result.final_val_loss, time.perf_counter() - wall, time.process_time() - cpu


def hf_model(ctx: RunContext, n_words: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    from herd.model import ModelConfig

    m = ctx.config.pretrain.model
    ffn = ModelConfig(**{k: m[k] for k in ("dim", "n_heads", "n_kv_heads", "multiple_of")}).ffn_hidden_dim
    config = LlamaConfig(
        hidden_size=m["dim"], intermediate_size=ffn, num_hidden_layers=m["n_layers"], num_attention_heads=m["n_heads"],
        num_key_value_heads=m["n_kv_heads"], vocab_size=n_words, max_position_embeddings=m["max_seq_len"],
        rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False, attn_implementation="sdpa",
    )
    return LlamaForCausalLM(config)


def hf_loss(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, int]:
    tokens, targets, _ = batch  # the packed rows; a plain loop attends across document boundaries
    logits = model(input_ids=tokens).logits
    loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="sum")  # ignore_index -100
    return loss, int((targets != -100).sum())


def hf_run(ctx: RunContext, seed: int) -> tuple[torch.nn.Module, Callable[[], None]]:
    """A fresh HF model on the speedrun's training batches, and its training step."""
    s, sources = ctx.config.pretrain, ctx.outputs("tokenize")["sources"]
    loader = TokenDataLoader(DataLoaderConfig({d: sources[d] for d in s.weights}, s.weights, s.batch_size, s.seq_len,
                                              seed))
    data = iter(loader)
    torch.manual_seed(seed)
    model = hf_model(ctx, loader.n_words).train()
    # fused: the kernel herd's optimizer uses, and HF Trainer's default (adamw_torch_fused) on torch >= 2.8
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr, fused=True)

    def step() -> None:
        loss, count = hf_loss(model, next(data))
        (loss / max(count, 1)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return model, step


def run_hf(ctx: RunContext, budget_s: float, seed: int) -> tuple[float, int, float]:
    """The plain loop for `budget_s` wall-clock seconds: (val loss, steps done, CPU seconds)."""
    wall, cpu = time.perf_counter(), time.process_time()
    s, sources = ctx.config.pretrain, ctx.outputs("tokenize")["sources"]
    model, step = hf_run(ctx, seed)
    steps = 0
    while steps == 0 or time.perf_counter() - wall < budget_s:
        step()
        steps += 1
    model.eval()
    val = TokenDataLoader(DataLoaderConfig({"val": sources["val"]}, None, s.batch_size, s.seq_len, seed))
    nats, tokens = 0.0, 0
    with torch.no_grad():
        for _, batch in zip(range(s.val_batches), val):
            loss, count = hf_loss(model, batch)
            nats, tokens = nats + float(loss), tokens + count
    return nats / max(tokens, 1), steps, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", help="speedrun preset whose data, model and batch are used")
    parser.add_argument("--steps", type=int, default=150, help="herd's pretraining steps (sets the wall-clock budget)")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--work", default="/tmp/speedrun_vs_hf", help="run directory (the data stages are reused)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ctx = RunContext(Path(args.work), preset_config(args.preset, ["progress=false"]))
    run_stages(ctx, log=lambda line: None, until="tokenize")
    rows = []
    for run in range(args.runs):
        herd_loss, herd_wall, herd_cpu = run_herd(ctx, Path(args.work) / f"bench-herd-{run}", args.steps, run)
        hf_val, hf_steps, hf_cpu = run_hf(ctx, herd_wall, run)
        rows.append((herd_loss, herd_wall, herd_cpu, hf_val, hf_steps, hf_cpu))
        print(f"run {run}: herd {herd_loss:.3f} ({args.steps} steps, {herd_wall:.0f} s wall, {herd_cpu:.0f} CPU-s) | "
              f"hf {hf_val:.3f} ({hf_steps} steps in the same wall-clock, {hf_cpu:.0f} CPU-s)", flush=True)
    m = ctx.config.pretrain
    print(f"\n{cpu_line()}\nHF loop settings: {PEER_SETTINGS}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; preset {args.preset}: model {m.model['dim']} "
          f"x {m.model['n_layers']} layers, batch {m.batch_size} x {m.seq_len}, {args.runs} runs, medians")
    med = [statistics.median(r[i] for r in rows) for i in range(6)]
    print(f"{'':>5}  {'val loss (nats/token)':>21}  {'steps':>6}  {'wall s':>7}  {'CPU s':>6}")
    print(f"{'herd':>5}  {med[0]:21.3f}  {args.steps:6d}  {med[1]:7.0f}  {med[2]:6.0f}")
    print(f"{'hf':>5}  {med[3]:21.3f}  {med[4]:6.0f}  {med[1]:7.0f}  {med[5]:6.0f}")
    print(f"val loss herd - hf: {med[0] - med[3]:+.3f} nats/token (herd / hf: {med[0] / med[3]:.3f}x)")
    speed = args.steps / med[4]  # equal wall-clock: herd's steps per second over the HF loop's
    print(f"steps in the same wall-clock herd / hf: {speed:.2f}x (herd's time includes validation and checkpoints)")
    if speed > SUSPICIOUS:
        _, step = hf_run(ctx, 0)
        step()  # warm-up
        explain(speed, "the HF loop", lambda: [step() for _ in range(3)])


if __name__ == "__main__":
    main()
