"""The reward model: a Llama backbone with a scalar head read at a reply's last token, trained on preference
pairs with -log sigmoid(r_chosen - r_rejected) (no margin); `train_reward_model(config)` is the stage."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from herd.checkpoint.files import read_json
from herd.checkpoint.safetensors_io import read_tensors, write_tensors
from herd.errors import HerdError
from herd.model import ModelConfig, Transformer, build_model
from herd.post.batches import Batches, PairTensors, encode_pairs, pair_batch
from herd.post.data import read_preferences
from herd.post.stage import PostConfig, PostResult, export_trained, finished, load_start, train_stage
from herd.run_dir import write_json
from herd.tokenizer import Tokenizer, load_tokenizer
from herd.train.losses import Batch, LossOutput

FORMAT_TAG = "herd-reward-model"


class RewardModel(nn.Module):
    """`backbone` with its vocabulary head replaced by a linear map to one value; the reward of a sequence is the
    value at its last token."""

    def __init__(self, backbone: Transformer, seed: int = 0) -> None:
        super().__init__()
        self.config: ModelConfig = backbone.config
        head = nn.Linear(self.config.dim, 1, bias=False, device=backbone.tok_embeddings.weight.device)
        with torch.no_grad():
            head.weight.copy_(torch.randn(head.weight.shape, generator=torch.Generator().manual_seed(seed)) / self.config.dim**0.5)
        backbone.output = head
        self.backbone = backbone

    def forward(self, tokens: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """Rewards [B] of right-padded `tokens` [B, T] whose last real tokens sit at positions `last` [B]."""
        values = self.backbone(tokens)[..., 0].float()
        return values.gather(1, last[:, None])[:, 0]

    @torch.no_grad()
    def score(self, sequences: list[list[int]], batch_size: int = 16, pad_id: int = 0) -> list[float]:
        """Rewards of token sequences, scored in right-padded batches."""
        device = self.backbone.tok_embeddings.weight.device
        rewards: list[float] = []
        for start in range(0, len(sequences), batch_size):
            chunk = sequences[start : start + batch_size]
            tokens = torch.full((len(chunk), max(map(len, chunk))), pad_id, dtype=torch.long)
            for row, seq in enumerate(chunk):
                tokens[row, : len(seq)] = torch.tensor(seq)
            last = torch.tensor([len(seq) - 1 for seq in chunk])
            rewards += self(tokens.to(device), last.to(device)).tolist()
        return rewards


def pairwise_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(r_chosen - r_rejected) of each pair [n] (Llama 3 drops the margin term)."""
    return -F.logsigmoid(chosen - rejected)


def reward_loss(model: RewardModel, batch: Batch) -> LossOutput:
    """The summed pairwise loss of a (tokens, targets, last) pair batch; chosen rows first, then rejected."""
    tokens, _, last = batch
    chosen, rejected = model(tokens, last).chunk(2)
    correct = float((chosen > rejected).sum())
    return LossOutput(pairwise_loss(chosen, rejected).sum(), chosen.shape[0], {"correct_pairs": correct})


@torch.no_grad()
def pair_accuracy(model: RewardModel, pairs: PairTensors, batch_size: int, pad_id: int, device: torch.device) -> dict[str, float]:
    """Held-out accuracy (share of pairs with r_chosen > r_rejected), mean loss and mean margin."""
    correct = loss = margin = 0.0
    for start in range(0, len(pairs), batch_size):
        tokens, _, last = pair_batch(pairs, range(start, min(start + batch_size, len(pairs))), pad_id)
        chosen, rejected = model(tokens.to(device), last.to(device)).chunk(2)
        correct += float((chosen > rejected).sum())
        loss += float(pairwise_loss(chosen, rejected).sum())
        margin += float((chosen - rejected).sum())
    n = len(pairs)
    return {"val_accuracy": correct / n, "val_loss": loss / n, "val_margin": margin / n}


def save_reward_model(model: RewardModel, tok: Tokenizer, directory: str | Path) -> Path:
    """Write the reward model (backbone and head weights, config, tokenizer) to `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_tensors(directory, {k: v.detach().contiguous() for k, v in model.state_dict().items()})
    write_json(directory / "config.json", {"format": FORMAT_TAG, "model": model.config.to_params()})
    tok.save(directory / "tokenizer.model")
    return directory


def load_reward_model(directory: str | Path, device: torch.device | str = "cpu") -> tuple[RewardModel, Tokenizer]:
    """A reward model saved by `save_reward_model` (or `herd rm`), and its tokenizer."""
    directory = Path(directory)
    config = read_json(directory / "config.json")
    if config.get("format") != FORMAT_TAG:
        raise HerdError(f"{directory} is not a reward model (config.json format is {config.get('format')!r}); "
                        "pass the model directory that `herd rm` wrote")
    model = RewardModel(build_model(ModelConfig.from_params(config["model"]), device=device))
    model.load_state_dict(read_tensors(directory))
    return model.eval(), load_tokenizer(directory)


@dataclass
class RewardConfig(PostConfig):
    """A reward-model run: the PostConfig fields plus preference data."""

    out_dir: str = "runs/rm"
    """Run directory."""
    data: str = ""
    """Training preferences: JSONL of {"prompt", "chosen", "rejected"[, "edited"]} or a saved dataset."""
    val_data: str | None = None
    """Held-out preferences; their pair accuracy is reported as val_accuracy."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.data:
            raise HerdError("data is empty; set data=<preference JSONL file or dataset directory>")


def train_reward_model(config: RewardConfig) -> PostResult:
    """Train a reward model from `config.model`'s backbone; it is saved to out_dir/model."""
    done = finished(config)
    if done is not None:
        return done
    backbone, tok, device = load_start(config)
    model = RewardModel(backbone, config.seed)
    pairs = encode_pairs(tok, read_preferences(config.data), config.seq_len)
    data = Batches(len(pairs), config.batch_size, config.seed, partial(pair_batch, pairs, pad_id=tok.eos_id))
    val = encode_pairs(tok, read_preferences(config.val_data), config.seq_len) if config.val_data else None
    return train_stage(
        config, "rm", model, reward_loss, data, device,
        evaluate=partial(pair_accuracy, model, val, config.batch_size, tok.eos_id, device) if val else None,
        export=partial(export_trained, model, config, partial(save_reward_model, model, tok)), counts={"pairs": len(pairs), "truncated_replies": pairs.truncated},
    )
