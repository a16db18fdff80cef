"""Blocked CPU training attention: equal to torch SDPA (outputs and gradients), and used only where it should be."""

import pytest
import torch
import torch.nn.functional as F

from herd.model import ModelConfig, attention, build_model
from herd.model.attention import BlockedRows, RowKernel, row_kernel
from herd.model.blocked_attention import MAX_LENGTH, blocked_attention
from herd.model.masking import document_mask
from tests.tiny import model_config


def _qkv(batch, heads, kv_heads, length, dim, seed=0):
    generator = torch.Generator().manual_seed(seed)
    # q as the model makes it: a [B, H, T, D] view of a [B, T, H, D] projection
    q = torch.randn(batch, length, heads, dim, generator=generator).transpose(1, 2).requires_grad_()
    k = torch.randn(batch, kv_heads, length, dim, generator=generator).requires_grad_()
    v = torch.randn(batch, kv_heads, length, dim, generator=generator).requires_grad_()
    return q, k, v, torch.randn(batch, heads, length, dim, generator=generator)


@pytest.mark.parametrize(
    ("heads", "kv_heads", "length", "dim", "documents"),
    [(8, 4, 256, 32, False), (4, 4, 150, 16, False), (6, 2, 130, 8, True), (4, 1, 64, 16, True), (2, 2, 2, 8, False),
     (4, 2, 300, 16, True)],  # documents: later blocks skip the keys before their first query's document
)
def test_equals_sdpa_with_gradients(heads, kv_heads, length, dim, documents):
    q, k, v, grad = _qkv(2, heads, kv_heads, length, dim)
    mask = None
    if documents:
        doc_ids = torch.zeros(2, length, dtype=torch.long)
        doc_ids[0, length // 3 :] = 1
        doc_ids[1, length // 2 :] = 1
        doc_ids[1, length - 5 :] = 2
        mask = document_mask(doc_ids)
    results = []
    for attend in (
        lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, enable_gqa=True),
        lambda: blocked_attention(q, k, v, mask),
    ):
        out = attend()
        (out * grad).sum().backward()
        results.append([out.detach(), *(t.grad for t in (q, k, v))])
        for t in (q, k, v):
            t.grad = None
    for expected, got in zip(*results, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=2e-5)


def _counted(monkeypatch) -> list[int]:
    """Count the model's calls of the blocked kernel."""
    calls = []

    def counted(*args):
        calls.append(1)
        return blocked_attention(*args)

    monkeypatch.setattr(attention, "blocked_attention", counted)
    return calls


def test_chosen_for_cpu_training_and_used_for_fp32_and_bf16_lengths_it_fits(monkeypatch):
    model = build_model(ModelConfig(dim=32, n_layers=1, n_heads=2, n_kv_heads=2, vocab_size=64, multiple_of=16, max_seq_len=64))
    assert isinstance(model.row_kernel, BlockedRows)  # built in train mode on the CPU
    assert type(model.eval().row_kernel) is RowKernel and isinstance(model.train().row_kernel, BlockedRows)
    assert type(row_kernel(torch.device("cpu"), training=False)) is RowKernel
    calls = _counted(monkeypatch)
    kernel = BlockedRows()

    def used(q: torch.Tensor) -> bool:
        calls.clear()
        kernel(q, q[:, :1], q[:, :1], None)
        return bool(calls)

    assert not used(torch.randn(1, 2, 16, 8, dtype=torch.float16))
    assert not used(torch.randn(1, 2, 1, 8))
    for dtype, longest in MAX_LENGTH.items():
        assert used(torch.randn(1, 2, longest, 8, dtype=dtype))
        assert not used(torch.randn(1, 2, longest + 1, 8, dtype=dtype))


def test_bf16_inputs_are_computed_in_fp32():
    """bf16 q, k, v: the fp32 result rounded to bf16, gradients too; CPU autocast does not lower the kernel's GEMMs."""
    q, k, v, grad = _qkv(2, 4, 2, 100, 16)
    mask = document_mask((torch.arange(100) >= 30).long().expand(2, 100))
    out = blocked_attention(q, k, v, mask)
    expected = [out.detach(), *torch.autograd.grad(out, (q, k, v), grad)]
    low = [t.detach().bfloat16().requires_grad_() for t in (q, k, v)]
    out = blocked_attention(*low, mask)
    got = [out.detach(), *torch.autograd.grad(out, low, grad.bfloat16())]
    for tensor, reference in zip(got, expected, strict=True):
        assert tensor.dtype == torch.bfloat16
        torch.testing.assert_close(tensor.float(), reference, rtol=2e-2, atol=2e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = blocked_attention(q, k, v, mask)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected[0], rtol=0, atol=0)


@pytest.mark.parametrize(("autocast", "rtol"), [(None, 1e-4), (torch.bfloat16, 3e-2)])
def test_model_gradients_match_sdpa(monkeypatch, autocast, rtol):
    """The model's training forward takes the blocked path, under bf16 autocast too; its loss and gradients are
    SDPA's (to bf16's precision under autocast, where the blocked path is the more exact one)."""
    config = model_config(vocab_size=128, ffn_dim_multiplier=1.3, max_seq_len=96)
    model = build_model(config)
    model.init_weights(0)
    tokens = torch.randint(0, 128, (2, 96), generator=torch.Generator().manual_seed(1))
    doc_ids = (torch.arange(96) >= 40).long().expand(2, 96)
    runs = []
    calls = _counted(monkeypatch)
    for kernel in (BlockedRows(), RowKernel()):
        model.row_kernel = kernel
        calls.clear()
        model.zero_grad()
        with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            logits = [model(tokens, doc_ids=d).float().flatten(0, 1) for d in (None, doc_ids)]
        loss = sum(F.cross_entropy(scores, tokens.flatten()) for scores in logits)
        loss.backward()
        runs.append((len(calls), loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (blocked_calls, blocked_loss, blocked_grads), (sdpa_calls, sdpa_loss, sdpa_grads) = runs
    assert (blocked_calls, sdpa_calls) == (2 * config.n_layers, 0)
    torch.testing.assert_close(blocked_loss, sdpa_loss, rtol=rtol / 100, atol=1e-6)
    for got, expected in zip(blocked_grads, sdpa_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=rtol, atol=rtol / 100)


def test_compiled_blocks_match_eager():
    """torch.compile traces the blocked attention (compile=true keeps it), with and without a document mask: same
    loss and gradients as eager (which skips keys under the mask)."""
    config = model_config(vocab_size=128, ffn_dim_multiplier=1.3, max_seq_len=80)
    models = [build_model(config) for _ in range(2)]
    for model in models:
        model.init_weights(0)
    for block in models[1].layers:
        block.compile()
    tokens = torch.randint(0, 128, (2, 80), generator=torch.Generator().manual_seed(2))
    doc_ids = (torch.arange(80) >= 60).long().expand(2, 80)  # the last block (64..79) lies in the second document
    losses = []
    for model in models:
        loss = sum(F.cross_entropy(model(tokens, doc_ids=d).flatten(0, 1), tokens.flatten()) for d in (None, doc_ids))
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    for (name, compiled), eager in zip(models[1].named_parameters(), models[0].parameters(), strict=True):
        torch.testing.assert_close(compiled.grad, eager.grad, rtol=1e-4, atol=1e-6, msg=name)
