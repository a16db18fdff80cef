"""FlexAttention for packed documents (the CUDA path), checked on CPU through its forward pass.

torch 2.13 has no FlexAttention backward on CPU, so these run without gradients; the kernels are torch's, the
BlockMask, the GQA call and the model's routing are herd's.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import BlockMask

from herd.model import ModelConfig, build_model
from herd.model import flex_attention as flex
from herd.model.attention import Rows, row_kernel
from herd.model.masking import document_mask


def packed_doc_ids(lengths: list[list[int]]) -> torch.Tensor:
    return torch.stack([torch.repeat_interleave(torch.arange(len(row)), torch.tensor(row)) for row in lengths])


@pytest.fixture
def flex_on_cpu(monkeypatch):
    """Route CPU document masks through FlexAttention, as CUDA's are."""
    monkeypatch.setattr(flex, "FLEX_DEVICES", ("cpu",))


def random_qkv(lengths: list[list[int]]) -> tuple[torch.Tensor, ...]:
    """q [B, 8, T, 16] and k, v [B, 4, T, 16] (GQA) for packed rows of these document lengths."""
    batch, length = len(lengths), sum(lengths[0])
    return torch.randn(batch, 8, length, 16), torch.randn(batch, 4, length, 16), torch.randn(batch, 4, length, 16)


# 300 tokens: not a multiple of FlexAttention's 128-token blocks; rows of one, two and three documents
ROWS = [[100, 150, 50], [37, 263]]
OTHER_ROWS = [[300], [1, 200, 99]]


def test_flex_document_attention_equals_sdpa_with_the_dense_mask():
    torch.manual_seed(0)
    q, k, v = random_qkv(ROWS)
    doc_ids = packed_doc_ids(ROWS)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=document_mask(doc_ids), enable_gqa=True)
    got = flex.flex_document_attention(q, k, v, flex.document_block_mask(doc_ids))
    assert (got - expected).abs().max() < 1e-5


def test_new_documents_reuse_the_compiled_kernels():
    torch.manual_seed(0)
    q, k, v = random_qkv(ROWS)
    flex.flex_document_attention(q, k, v, flex.document_block_mask(packed_doc_ids(ROWS)))
    doc_ids = packed_doc_ids(OTHER_ROWS)
    with torch._dynamo.config.patch(error_on_recompile=True):  # another batch's mask must not recompile
        got = flex.flex_document_attention(q, k, v, flex.document_block_mask(doc_ids))
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=document_mask(doc_ids), enable_gqa=True)
    assert (got - expected).abs().max() < 1e-5


def test_packed_rows_take_a_block_mask_only_where_flex_applies(flex_on_cpu, monkeypatch):
    doc_ids = packed_doc_ids(ROWS)

    def mask(ids: torch.Tensor):
        return Rows(row_kernel(ids.device, training=True), ids.shape[1], ids.device, ids).mask

    assert isinstance(mask(doc_ids), BlockMask)
    assert mask(torch.zeros_like(doc_ids)) is None  # one document per row: causal SDPA
    monkeypatch.setattr(flex, "FLEX_DEVICES", ("cuda",))
    assert mask(doc_ids).dtype == torch.bool


def test_model_through_flex_equals_the_dense_mask(flex_on_cpu, monkeypatch):
    # heads as in random_qkv, so the kernels compiled above serve here too
    config = ModelConfig(dim=128, n_layers=2, n_heads=8, n_kv_heads=4, vocab_size=300, multiple_of=16,
                         ffn_dim_multiplier=None, max_seq_len=512)
    torch.manual_seed(0)
    model = build_model(config).eval()
    model.init_weights(seed=1)
    doc_ids = packed_doc_ids(ROWS)
    tokens = torch.randint(0, config.vocab_size, doc_ids.shape)
    with torch.no_grad():
        through_flex = model(tokens, doc_ids=doc_ids)
        monkeypatch.setattr(flex, "FLEX_DEVICES", ())
        dense = model.eval()(tokens, doc_ids=doc_ids)  # the kernel is chosen again when the mode is set
    assert (through_flex - dense).abs().max() < 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="FlexAttention's backward runs on CUDA only (torch 2.13)")
def test_gradients_equal_sdpa_with_the_dense_mask_on_cuda():
    torch.manual_seed(0)
    inputs = [t.cuda().requires_grad_() for t in random_qkv(ROWS)]
    doc_ids = packed_doc_ids(ROWS).cuda()
    grad_out = torch.randn_like(inputs[0])
    results = []
    for attend in (lambda q, k, v: flex.flex_document_attention(q, k, v, flex.document_block_mask(doc_ids)),
                   lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=document_mask(doc_ids),
                                                                  enable_gqa=True)):
        out = attend(*inputs)
        results.append([out, *torch.autograd.grad(out, inputs, grad_out)])
    for got, expected in zip(*results, strict=True):
        assert (got - expected).abs().max() < 1e-4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="SDPA's CUDA kernels")
def test_dense_document_masks_on_cuda_keep_a_fused_kernel(monkeypatch):
    """Dense masks with GQA on CUDA (FlexAttention off) run a fused SDPA kernel, forward and backward: the math
    kernel, which would hold [B, H, T, T] scores per layer, is ruled out here and the call must still succeed."""
    monkeypatch.setattr(flex, "FLEX_DEVICES", ())
    config = ModelConfig(dim=128, n_layers=2, n_heads=8, n_kv_heads=4, vocab_size=300, multiple_of=16,
                         ffn_dim_multiplier=None, max_seq_len=512)
    model = build_model(config)
    model.init_weights(seed=1)
    on_gpu = copy.deepcopy(model).cuda()
    doc_ids = packed_doc_ids(ROWS)
    tokens = torch.randint(0, config.vocab_size, doc_ids.shape)
    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION]):
        logits = on_gpu(tokens.cuda(), doc_ids=doc_ids.cuda())
        logits.square().mean().backward()
    with torch.no_grad():
        expected = model(tokens, doc_ids=doc_ids)
    assert (logits.detach().cpu() - expected).abs().max() < 1e-4


def test_shared_prefixes_in_the_block_mask():
    """Documents after a shared prefix (negative document id) see it, as in herd.model.masking: checked against a
    mask written out here."""
    torch.manual_seed(0)
    q, k, v = random_qkv(ROWS)
    doc_ids = torch.tensor([[-1] * 100 + [0] * 150 + [1] * 50, [0] * 37 + [-2] * 63 + [1] * 200])
    expected_mask = torch.zeros(2, 1, 300, 300, dtype=torch.bool)
    for b, row in enumerate(doc_ids.tolist()):
        for query, doc in enumerate(row):
            prefix = next((row[key] for key in range(query, -1, -1) if row[key] < 0), None)
            expected_mask[b, 0, query, : query + 1] = torch.tensor([d in (doc, prefix) for d in row[: query + 1]])
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=expected_mask, enable_gqa=True)
    got = flex.flex_document_attention(q, k, v, flex.document_block_mask(doc_ids))
    assert (got - expected).abs().max() < 1e-5
