"""`parallelize` on one process: the wrappers it applies keep the model's numbers."""

import torch
import torch.nn.functional as F
from torch._dynamo.utils import counters

from herd.model import ModelConfig, build_model
from herd.train.distributed import Distributed
from herd.train.parallelize import parallelize


def test_checkpointed_blocks_still_compile_and_match_eager():
    """compile=true with activation_checkpointing=true compiles the blocks (torch.compile used to skip them all,
    silently, when the forward began in torch's checkpoint code) and gives eager's loss and gradients."""
    config = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=128, multiple_of=32, max_seq_len=80)
    eager = build_model(config)
    wrapped = build_model(config, device="meta")
    parallelize(wrapped, Distributed(0, 1, torch.device("cpu")), activation_checkpointing=True, compile=True)
    wrapped.to_empty(device="cpu")
    tokens = torch.randint(0, 128, (2, 80), generator=torch.Generator().manual_seed(2))
    doc_ids = (torch.arange(80) >= 60).long().expand(2, 80)
    torch._dynamo.reset()
    counters.clear()
    losses = []
    for model in (eager, wrapped):
        model.init_weights(0)
        loss = F.cross_entropy(model(tokens, doc_ids=doc_ids).flatten(0, 1), tokens.flatten())
        loss.backward()
        losses.append(loss.detach())
    assert counters["frames"]["ok"] >= 1, "no block was compiled"
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    for (name, got), expected in zip(wrapped.named_parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(got.grad, expected.grad, rtol=1e-4, atol=1e-6, msg=name)
