"""Supervised fine-tuning: `sft(config)` trains a model on chat dialogs, with the loss on assistant tokens only.

Dialogs are packed whole into rows with document masks; the loss is pretraining's next-token loss on targets
that the chat format's loss mask keeps (the rest are IGNORE_INDEX), run by the shared training loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from herd.checkpoint import save
from herd.errors import HerdError
from herd.post.batches import Batches, PackedChats, pack_chats
from herd.post.data import read_chats
from herd.post.stage import PostConfig, PostResult, export_trained, finished, load_start, train_stage
from herd.train.losses import next_token_loss, token_losses


@dataclass
class SFTConfig(PostConfig):
    """An SFT run: the PostConfig fields plus its chat data."""

    out_dir: str = "runs/sft"
    """Run directory."""
    data: str = ""
    """Training dialogs: a JSONL file of {"messages": [...]} records, a dataset saved by datasets.save_to_disk, or an
    eval task's split as dialogs, task:NAME[/train|fewshot|eval][@DATA_DIR] (e.g. task:gsm8k/train@data/benchmarks)."""
    val_data: str | None = None
    """Held-out dialogs in the same form; their assistant-token loss is reported as val_loss."""
    val_batches: int = 8
    """Batches of held-out rows per validation (the same first rows each time)."""
    share_prefixes: bool = False
    """Pack dialogs ordered by their tokens, each row's dialogs sharing one copy of the prompt tokens they all begin
    with (herd.post.batches.pack_chats; exact): more dialogs per token where prompts share a long header."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.data:
            raise HerdError("data is empty; set data=<chat JSONL file or dataset directory>")
        if self.val_batches < 1:
            raise HerdError(f"val_batches must be at least 1, got {self.val_batches}")


def sft(config: SFTConfig) -> PostResult:
    """Fine-tune `config.model` on `config.data`; the final model goes to out_dir/model (herd format)."""
    done = finished(config)
    if done is not None:
        return done
    model, tok, device = load_start(config)
    pack = partial(pack_chats, tok, seq_len=config.seq_len, share_prefixes=config.share_prefixes)
    rows = pack(read_chats(config.data))
    data = Batches(len(rows), config.batch_size, config.seed, rows.batch)
    val = pack(read_chats(config.val_data)) if config.val_data else None
    counts = {"dialogs": rows.dialogs, "rows": len(rows), "truncated_dialogs": rows.truncated}
    return train_stage(
        config, "sft", model, next_token_loss, data, device,
        evaluate=partial(assistant_loss, model, val, config.batch_size, config.val_batches, device) if val else None,
        export=partial(export_trained, model, config, partial(save, model, tok)), counts=counts,
    )


def assistant_loss(
    model: nn.Module, rows: PackedChats, batch_size: int, batches: int, device: torch.device
) -> dict[str, float]:
    """Mean next-token loss (nats) over the assistant tokens of the first `batches` batches of `rows`."""
    nats, tokens = 0.0, 0
    for start in range(0, min(len(rows), batch_size * batches), batch_size):
        batch = tuple(t.to(device) for t in rows.batch(range(start, min(start + batch_size, len(rows)))))
        nats += float(token_losses(model, batch).sum())
        tokens += int((batch[1] >= 0).sum())
    return {"val_loss": nats / max(tokens, 1)}
