"""`parallelize` on one process: the wrappers it applies keep the model's numbers."""

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch._dynamo.utils import counters
from torch.distributed.device_mesh import init_device_mesh

from herd.model import build_model
from herd.train.distributed import Distributed
from herd.train.losses import next_token_loss
from herd.train.parallelize import apply_fsdp, parallelize
from tests.tiny import model_config

CONFIG = model_config(vocab_size=128, ffn_dim_multiplier=1.3, max_seq_len=80)


def test_checkpointed_blocks_still_compile_and_match_eager():
    """compile=true with activation_checkpointing=true compiles the blocks (torch.compile used to skip them all,
    silently, when the forward began in torch's checkpoint code) and gives eager's loss and gradients."""
    eager = build_model(CONFIG)
    wrapped = build_model(CONFIG, device="meta")
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


def test_fsdp_model_takes_the_chunked_loss_with_eager_gradients(tmp_path):
    """Under FSDP2 the loss still goes through the chunked head (the head module's forward, whole logits, never
    runs) and gives the plain model's loss and gradients, the head's included."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        models = [build_model(CONFIG) for _ in range(2)]
        for model in models:
            model.init_weights(0)
        apply_fsdp(models[1], init_device_mesh("cpu", (1,), mesh_dim_names=("dp",)), torch.float32)
        heads_run = []
        models[1].output.register_forward_hook(lambda *_: heads_run.append(1))
        tokens = torch.randint(0, 128, (2, 81), generator=torch.Generator().manual_seed(3))
        batch = (tokens[:, :-1], tokens[:, 1:], (torch.arange(80) >= 50).long().expand(2, 80))
        losses = []
        for model in models:
            loss = next_token_loss(model, batch).total
            loss.backward()
            losses.append(loss.detach())
        assert not heads_run
        torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
        for (name, sharded), plain in zip(models[1].named_parameters(), models[0].parameters(), strict=True):
            torch.testing.assert_close(sharded.grad.full_tensor(), plain.grad, rtol=1e-4, atol=1e-6, msg=name)
    finally:
        dist.destroy_process_group()
