"""The Llama 3 transformer: embedding, pre-norm blocks (RMSNorm, GQA with RoPE, SwiGLU), head.

Parameter names match Meta's checkpoints (`tok_embeddings`, `layers.N.attention.wq`, ...), so the
Meta format loads without a mapping; HF names are mapped in `herd.checkpoint.hf_format`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from herd.errors import HerdError
from herd.model import cpu_tuning
from herd.model.attention import AttentionContext, CacheContext, Rows, row_kernel
from herd.model.config import ModelConfig
from herd.model.kv_cache import KVCache
from herd.model.rope import apply_rope, rope_cos_sin, rope_frequencies


class RMSNorm(nn.Module):
    """Root-mean-square norm, computed in fp32 and cast back before the weight (as Meta does)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


class Linear(nn.Linear):
    """A bias-free projection whose forward is `cpu_tuning.linear`: oneDNN's GEMM for fp32 inference on CPU rows
    (prefill, evals; with `one_row`, the head, on a single row too), F.linear otherwise (training, decode's few rows,
    GPUs)."""

    def __init__(self, in_features: int, out_features: int, one_row: bool = False) -> None:
        super().__init__(in_features, out_features, bias=False)
        self.one_row = one_row

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cpu_tuning.linear(x, self.weight, self.one_row)


class Attention(nn.Module):
    """Grouped-query self-attention with RoPE; the forward's `AttentionContext` stores the keys/values and attends."""

    def __init__(self, config: ModelConfig, layer_id: int) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.kv_heads, config.head_dim
        self.wq = Linear(config.dim, self.n_heads * self.head_dim)
        self.wk = Linear(config.dim, self.n_kv_heads * self.head_dim)
        self.wv = Linear(config.dim, self.n_kv_heads * self.head_dim)
        self.wo = Linear(self.n_heads * self.head_dim, config.dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, context: AttentionContext) -> torch.Tensor:
        batch, length, _ = x.shape
        # -1 heads: under tensor parallelism each rank holds a slice of the heads
        q = apply_rope(self.wq(x).view(batch, length, -1, self.head_dim), cos, sin)
        k = apply_rope(self.wk(x).view(batch, length, -1, self.head_dim), cos, sin)
        v = self.wv(x).view(batch, length, -1, self.head_dim)
        return self.wo(context.attend(self.layer_id, q, k, v).reshape(batch, length, -1))


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.w1 = Linear(dim, hidden_dim)
        self.w2 = Linear(hidden_dim, dim)
        self.w3 = Linear(dim, hidden_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    """x + attention(norm(x)), then + feed_forward(norm(...))."""

    def __init__(self, config: ModelConfig, layer_id: int) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(config.dim, config.norm_eps)
        self.attention = Attention(config, layer_id)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)
        self.feed_forward = FeedForward(config.dim, config.ffn_hidden_dim)
        self.tp = None
        """Tensor parallelism (herd.model.tensor_parallel): sums the ranks' partial outputs of wo and w2."""

    def forward(self, x, cos, sin, context):  # noqa: ANN001, ANN201 - hot path, types as in Attention
        if self.tp is not None:
            h = x + self.tp.reduce(self.attention(self.attention_norm(x), cos, sin, context))
            return h + self.tp.reduce(self.feed_forward(self.ffn_norm(h)))
        h = x + self.attention(self.attention_norm(x), cos, sin, context)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    """A Llama 3 decoder: `model(tokens) -> logits` [B, T, vocab]."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(TransformerBlock(config, i) for i in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.output = Linear(config.dim, config.vocab_size, one_row=True)
        if config.tie_word_embeddings:
            self.output.weight = self.tok_embeddings.weight
        self.register_buffer(
            "rope_freqs", rope_frequencies(config.head_dim, config.rope_theta, config.rope_scaling), persistent=False
        )
        self.row_kernel = row_kernel(self.rope_freqs.device, self.training)
        self.tp = None
        """This rank's `TensorParallel` when the weights are its slices (herd.model.tensor_parallel.parallelize)."""
        self.tp_head = False
        """Whether `output` holds this rank's slice of the vocabulary (then `logits` gathers the slices)."""

    @property
    def kv_heads(self) -> int:
        """Key/value heads this process holds and caches: all of them, or its slice under tensor parallelism."""
        return self.config.kv_heads // (1 if self.tp is None else self.tp.world)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """The head on final-normed hidden states: logits over the whole vocabulary (gathered from the ranks'
        slices under tensor parallelism)."""
        logits = self.output(h)
        return self.tp.gather(logits) if self.tp_head else logits

    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN202 - nn.Module's signature
        """Move/cast as usual, but keep the RoPE frequencies in fp32 whatever dtype the weights take; choose the
        rows' attention kernel for the device."""
        super()._apply(fn, recurse)
        self.place_buffers(self.rope_freqs.device)
        return self

    def place_buffers(self, device: torch.device | str) -> None:
        """Compute the RoPE frequencies (fp32) on `device` and choose the rows' attention kernel for it; moves do
        this themselves, weights assigned onto a model built on "meta" (checkpoint loading) need it called."""
        freqs = rope_frequencies(self.config.head_dim, self.config.rope_theta, self.config.rope_scaling)
        self.rope_freqs = freqs.to(device)
        self.row_kernel = row_kernel(self.rope_freqs.device, self.training)

    def train(self, mode: bool = True) -> Transformer:
        """Switch train/eval as usual, and the rows' attention kernel with it (CPU training has its own)."""
        super().train(mode)
        self.row_kernel = row_kernel(self.rope_freqs.device, mode)
        return self

    def forward(
        self,
        tokens: torch.Tensor,
        *,
        doc_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        context: AttentionContext | None = None,
        last_only: bool = False,
        head: bool = True,
    ) -> torch.Tensor:
        """Logits for `tokens` [B, T] (a pipeline stage without the embedding takes hidden states and doc_ids).

        doc_ids [B, T]: document index of each token in packed rows; attention never crosses a
        document and positions restart at each one. cache: decode incrementally after the cached
        tokens. context: the attention context to run instead (doc_ids and cache build one). last_only: compute
        the head for the final position only (prefill). head=False: the final-normed hidden states [B, T, dim]
        that `self.output` maps to logits instead, for losses that apply the head themselves (chunked
        cross-entropy); through `forward`, so FSDP's hooks gather the weights.
        """
        if context is None:
            context = self._context(tokens, doc_ids, cache)
        cos, sin = rope_cos_sin(self.rope_freqs, context.positions)
        h = tokens if self.tok_embeddings is None else self.tok_embeddings(tokens)
        for layer in self.layers:
            h = layer(h, cos, sin, context)
        if cache is not None:
            cache.length += tokens.shape[1]
        if self.norm is None:  # a pipeline stage before the last (herd.train.pipeline): hidden states out
            return h
        h = self.norm(h[:, -1:] if last_only else h)
        return self.logits(h) if head else h

    def _context(self, tokens: torch.Tensor, doc_ids: torch.Tensor | None, cache: KVCache | None) -> AttentionContext:
        """The context `tokens` run with, after checking them against the model and the cache."""
        if self.tok_embeddings is None:  # a pipeline stage's hidden states (sequence-parallel: a shard of the rows)
            return Rows(self.row_kernel, doc_ids.shape[1], tokens.device, doc_ids)
        if tokens.dim() != 2:
            raise HerdError(f"tokens must be a [batch, length] tensor, got shape {tuple(tokens.shape)}")
        length = tokens.shape[1]
        start = cache.length if cache is not None else 0
        if start + length > self.config.max_seq_len:
            raise HerdError(
                f"sequence of {start + length} tokens exceeds the model's context of {self.config.max_seq_len}"
            )
        if doc_ids is not None:
            if cache is not None:
                raise HerdError("doc_ids (packed documents) cannot be combined with a KV cache")
            if doc_ids.shape != tokens.shape:
                raise HerdError(f"doc_ids shape {tuple(doc_ids.shape)} must equal tokens shape {tuple(tokens.shape)}")
        if cache is not None:
            return CacheContext(cache, length, tokens.device)
        return Rows(self.row_kernel, length, tokens.device, doc_ids)

    def decode_step(self, tokens: torch.Tensor, cache: KVCache, slot: torch.Tensor) -> torch.Tensor:
        """Logits [B, 1, vocab] for one token per row [B, 1], written at cache slot `slot` (LongTensor [1]).

        Attention spans the whole cache under a mask, so every shape is static: this is the step to
        torch.compile or capture in a CUDA graph. The caller advances `cache.length`.
        """
        return self(tokens, context=CacheContext.at_slot(cache, slot))

    @torch.no_grad()
    def init_weights(self, seed: int = 0) -> None:
        """Fresh weights for training from scratch: truncated normals, depth-scaled output projections."""
        generator = torch.Generator().manual_seed(seed)
        params = dict(self.named_parameters())
        for name, std in init_plan(self.config):
            if std is None:
                params[name].fill_(1.0)
            else:
                params[name].copy_(torch.randn(params[name].shape, generator=generator).clamp_(-3, 3) * std)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def replace_linears(self, make: Callable[[nn.Linear], nn.Module]) -> None:
        """Replace each projection of the attention and feed-forward blocks, and the head, by `make(linear)`."""
        for parent in self.modules():
            if isinstance(parent, Attention | FeedForward):
                for name, child in list(parent.named_children()):
                    if isinstance(child, nn.Linear):
                        setattr(parent, name, make(child))
        self.output = make(self.output)


def init_plan(config: ModelConfig) -> list[tuple[str, float | None]]:
    """`init_weights`' recipe in its drawing order: (parameter name, std of its truncated normal, or None for ones)."""
    tied = config.tie_word_embeddings
    plan: list[tuple[str, float | None]] = [("tok_embeddings.weight", 0.02 if tied else 1.0)]
    for i in range(config.n_layers):
        depth_std = 0.02 / math.sqrt(2 * (i + 1))
        plan += [(f"layers.{i}.{name}.weight", 0.02) for name in
                 ("attention.wq", "attention.wk", "attention.wv", "feed_forward.w1")]
        plan += [(f"layers.{i}.{name}.weight", depth_std) for name in
                 ("attention.wo", "feed_forward.w2", "feed_forward.w3")]
        plan += [(f"layers.{i}.attention_norm.weight", None), (f"layers.{i}.ffn_norm.weight", None)]
    plan.append(("norm.weight", None))
    if not tied:
        plan.append(("output.weight", config.dim**-0.5))
    return plan


def build_model(
    config: ModelConfig, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> Transformer:
    """Construct a model; on the "meta" device nothing is allocated (for later sharding or loading)."""
    with torch.device(device):
        model = Transformer(config)
    return model.to(dtype=dtype)
