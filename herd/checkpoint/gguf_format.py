"""GGUF export for llama.cpp-based tools: llama architecture metadata, the Llama 3 BPE vocabulary, the tensors.

Follows llama.cpp's `convert_hf_to_gguf.py` (LlamaModel) for Llama 3. Its q/k permutation turns HF's half-split
rotary rows back into Meta's interleaved ones, which is herd's own layout, so q/k go in unchanged. Llama 3.1
scaling travels as `rope_freqs.weight` (per-frequency divisors), as GGUF has no llama3 scaling type. The merges
list is derived here from the tiktoken ranks, as transformers' TikTokenConverter does (it needs transformers
and a tiktoken file on disk, gguf has no such converter): every split of a token into two tokens, by rank.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import gguf
import numpy as np
import torch
from gguf import MODEL_TENSOR
from gguf import GGMLQuantizationType as QType

from herd.errors import HerdError
from herd.model import ModelConfig, Transformer
from herd.model.rope import rope_frequencies
from herd.run_dir import atomic_path
from herd.tokenizer import Tokenizer

OUTTYPES: dict[str, QType] = {"f32": QType.F32, "f16": QType.F16, "bf16": QType.BF16, "q8_0": QType.Q8_0}
_FILE_TYPES = {
    QType.F32: gguf.LlamaFileType.ALL_F32,
    QType.F16: gguf.LlamaFileType.MOSTLY_F16,
    QType.BF16: gguf.LlamaFileType.MOSTLY_BF16,
    QType.Q8_0: gguf.LlamaFileType.MOSTLY_Q8_0,
}
_OUTTYPE_OF_DTYPE = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}

# herd weight name -> llama.cpp tensor, outside the blocks and inside block N.
_TOP_LEVEL = {
    "tok_embeddings.weight": MODEL_TENSOR.TOKEN_EMBD,
    "norm.weight": MODEL_TENSOR.OUTPUT_NORM,
    "output.weight": MODEL_TENSOR.OUTPUT,
}
_LAYER = {
    "attention_norm.weight": MODEL_TENSOR.ATTN_NORM,
    "attention.wq.weight": MODEL_TENSOR.ATTN_Q,
    "attention.wk.weight": MODEL_TENSOR.ATTN_K,
    "attention.wv.weight": MODEL_TENSOR.ATTN_V,
    "attention.wo.weight": MODEL_TENSOR.ATTN_OUT,
    "ffn_norm.weight": MODEL_TENSOR.FFN_NORM,
    "feed_forward.w1.weight": MODEL_TENSOR.FFN_GATE,
    "feed_forward.w2.weight": MODEL_TENSOR.FFN_DOWN,
    "feed_forward.w3.weight": MODEL_TENSOR.FFN_UP,
}

# The Llama 3 chat format of herd.tokenizer.chat_format as a Jinja template (llama.cpp, llama-cpp-python).
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + ('ipython' if message['role'] == 'tool' else message['role'])"
    " + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt and messages[-1]['role'] != 'assistant' %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)


def gguf_name(name: str) -> str:
    """The llama.cpp name of a herd weight."""
    if name in _TOP_LEVEL:
        return gguf.TENSOR_NAMES[_TOP_LEVEL[name]] + ".weight"
    _, block, key = name.split(".", 2)
    return gguf.TENSOR_NAMES[_LAYER[key]].format(bid=int(block)) + ".weight"


def write_gguf(
    model: Transformer, tokenizer: Tokenizer, path: str | Path, outtype: str | None = None, name: str = "herd"
) -> Path:
    """Write `model` and `tokenizer` as one GGUF file at `path`; returns it.

    `outtype` f32 | f16 | bf16 | q8_0 sets the matrices' type (default: the model's dtype); norms and
    RoPE factors stay f32, and q8_0 falls back to f16 for rows that are not a multiple of 32.
    """
    qtype = OUTTYPES.get(outtype or _OUTTYPE_OF_DTYPE.get(model.tok_embeddings.weight.dtype, "f32"))
    if qtype is None:
        raise HerdError(f"unknown GGUF type {outtype!r}; choose one of: {', '.join(OUTTYPES)}")
    path = Path(path).expanduser()
    if path.is_dir():
        raise HerdError(f"{path} is a directory; pass the GGUF file to write, e.g. {path / 'model.gguf'}")
    config = model.config
    writer = gguf.GGUFWriter(None, arch=gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    _add_hparams(writer, config, qtype, name)
    _add_vocab(writer, tokenizer, config.vocab_size)
    tensors = [(key, tensor, _tensor_type(tensor, qtype)) for key, tensor in _tensors(model)]
    for key, tensor, ttype in tensors:
        nbytes = int(np.prod(gguf.quant_shape_to_byte_shape(tensor.shape, ttype)))
        writer.add_tensor_info(key, tensor.shape, np.dtype(np.float32), nbytes, raw_dtype=ttype)
    with atomic_path(path) as tmp:
        try:
            writer.write_header_to_file(path=tmp)
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            for _, tensor, ttype in tensors:  # one tensor converted at a time: memory stays at one tensor's size
                writer.write_tensor_data(_encode(tensor, ttype))
        finally:
            writer.close()
    return path


def _add_hparams(writer: gguf.GGUFWriter, config: ModelConfig, qtype: QType, name: str) -> None:
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_vocab_size(config.vocab_size)
    writer.add_context_length(config.max_seq_len)
    writer.add_embedding_length(config.dim)
    writer.add_block_count(config.n_layers)
    writer.add_feed_forward_length(config.ffn_hidden_dim)
    writer.add_head_count(config.n_heads)
    writer.add_head_count_kv(config.kv_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_layer_norm_rms_eps(config.norm_eps)
    writer.add_file_type(_FILE_TYPES[qtype])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _add_vocab(writer: gguf.GGUFWriter, tokenizer: Tokenizer, vocab_size: int) -> None:
    tokens, types, merges = vocabulary(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("llama-bpe")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokenizer.bos_id)
    writer.add_eos_token_id(tokenizer.eos_id)
    writer.add_eot_token_id(tokenizer.eot_id)
    writer.add_eom_token_id(tokenizer.eom_id)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)


def vocabulary(tokenizer: Tokenizer, vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    """GGUF's (tokens, token types, merges): byte-level token text (GPT-2's byte-to-character map) for the
    ranks, then the special tokens (control), then `[PADi]` (unused) up to the model's `vocab_size`."""
    if vocab_size < tokenizer.n_words:
        raise HerdError(
            f"the model has {vocab_size} embeddings but its tokenizer {tokenizer.n_words} ids; "
            "pair the model with the tokenizer it was trained with"
        )
    n_ranks = tokenizer.n_words - len(tokenizer.special_tokens)
    ranks = {tokenizer.token_bytes(i): i for i in range(n_ranks)}
    char_of_byte = gguf.vocab.bytes_to_unicode()

    def text(token: bytes) -> str:
        return "".join(char_of_byte[b] for b in token)

    special = {i: token for token, i in tokenizer.special_tokens.items()}
    tokens = (
        [text(token) for token in ranks]
        + [special[i] for i in range(n_ranks, tokenizer.n_words)]
        + [f"[PAD{i}]" for i in range(tokenizer.n_words, vocab_size)]
    )
    types = (
        [gguf.TokenType.NORMAL] * n_ranks
        + [gguf.TokenType.CONTROL] * len(special)
        + [gguf.TokenType.UNUSED] * (vocab_size - tokenizer.n_words)
    )
    return tokens, types, [f"{text(left)} {text(right)}" for left, right in bpe_merges(ranks)]


def bpe_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The (left, right) merges behind tiktoken ranks, in rank order: each split of a token into two tokens.

    The same list as transformers' TikTokenConverter (for Meta's 128K ranks, the merges of its tokenizer.json).
    """
    merges: list[tuple[bytes, bytes]] = []
    for token in sorted(ranks, key=ranks.__getitem__):
        splits = [(token[:i], token[i:]) for i in range(1, len(token)) if token[:i] in ranks and token[i:] in ranks]
        if len(token) > 1 and not splits:
            raise HerdError(f"BPE token {token!r} (rank {ranks[token]}) is not the merge of two tokens")
        merges += sorted(splits, key=lambda pair: (ranks[pair[0]], ranks[pair[1]]))
    return merges


def _tensors(model: Transformer) -> Iterator[tuple[str, torch.Tensor]]:
    """llama.cpp-named tensors: RoPE factors (3.1 scaling only), then every weight (a tied head left out)."""
    config = model.config
    if config.rope_scaling is not None:
        plain = rope_frequencies(config.head_dim, config.rope_theta)
        scaled = rope_frequencies(config.head_dim, config.rope_theta, config.rope_scaling)
        yield gguf.TENSOR_NAMES[MODEL_TENSOR.ROPE_FREQS] + ".weight", plain / scaled
    for key, param in model.named_parameters():  # a tied output.weight is the embedding's Parameter: skipped
        yield gguf_name(key), param.detach()


def _tensor_type(tensor: torch.Tensor, qtype: QType) -> QType:
    """f32 for vectors (norms, RoPE factors), as llama.cpp expects; f16 for rows q8_0 cannot block."""
    if tensor.dim() == 1:
        return QType.F32
    block_size, _ = gguf.GGML_QUANT_SIZES[qtype]
    return qtype if tensor.shape[-1] % block_size == 0 else QType.F16


def _encode(tensor: torch.Tensor, qtype: QType) -> np.ndarray:
    """The bytes llama.cpp reads for `tensor` stored as `qtype` (a view, not a copy, when dtypes agree)."""
    tensor = tensor.contiguous().cpu()
    if qtype == QType.F32:
        return tensor.to(torch.float32).numpy()
    if qtype == QType.F16:
        return tensor.to(torch.float16).numpy()
    if qtype == QType.BF16:
        return tensor.to(torch.bfloat16).view(torch.int16).numpy()
    return gguf.quants.quantize(tensor.to(torch.float32).numpy(), qtype)
