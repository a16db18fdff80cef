"""GGUF export: metadata, vocabulary, chat template and every tensor read back with gguf's own reader,
q/k layout against llama.cpp's HF conversion, and the merges run by HF tokenizers' BPE against tiktoken."""

import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as QType
from jinja2.sandbox import ImmutableSandboxedEnvironment
from safetensors.torch import load_file

import herd.checkpoint as ckpt
from herd.checkpoint.gguf_format import gguf_name, vocabulary
from herd.errors import HerdError
from herd.model import RopeScaling
from herd.model.rope import rope_frequencies
from herd.tokenizer import PAT_STR, Tokenizer
from tests.checkpoint.test_checkpoint import random_model, small_config
from tests.checkpoint.test_checkpoint import tok as shared_tok

SHAKESPEARE = Path(__file__).resolve().parents[3] / "shared/data/text/tinyshakespeare.txt"
TRICKY_TEXTS = [
    "Hello world! It's 2024: 3.14159, 1234567 and  double  spaces.\n\n\tTabs\r\nand CRLF",
    "I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL",
    "🚀 (normal) 😶\u200d🌫️ ✅ 🦙🦙 3 33 333 3333 កាន់តែពិសេសអាច ?我想在apple工作1314151天～ нещо на Български",
    "def f(x):\n    return {'a': [x ** 2 for _ in range(10)]}  # comment\n\n\n    \n",
    "'''''''```````\"\"\"\"......!!!!!!?????? ------======= \u00a0non-breaking\u3000ideographic",
]

tok = shared_tok  # the same 264-rank BPE fixture as test_checkpoint


def export(tmp_path: Path, tok: Tokenizer, model, outtype: str | None) -> gguf.GGUFReader:
    src = ckpt.save(model, tok, tmp_path / "src")
    return gguf.GGUFReader(ckpt.convert(src, tmp_path / "model.gguf", to="gguf", outtype=outtype))


def field(reader: gguf.GGUFReader, key: str):
    return reader.fields[key].contents()


@pytest.mark.parametrize(
    ("dtype", "outtype", "matrix_type"),
    [
        (torch.float32, None, QType.F32),
        (torch.bfloat16, None, QType.BF16),
        (torch.float32, "f16", QType.F16),
        (torch.float32, "bf16", QType.BF16),
        (torch.bfloat16, "f32", QType.F32),
        (torch.float32, "q8_0", QType.Q8_0),
    ],
)
def test_metadata_and_every_tensor(tmp_path, tok, dtype, outtype, matrix_type):
    config = small_config()
    model = random_model(config, dtype)
    reader = export(tmp_path, tok, model, outtype)

    assert field(reader, "general.architecture") == "llama"
    assert field(reader, "general.name") == "src"
    expected = {
        "llama.context_length": 512,
        "llama.embedding_length": 64,
        "llama.block_count": 2,
        "llama.feed_forward_length": config.ffn_hidden_dim,
        "llama.attention.head_count": 4,
        "llama.attention.head_count_kv": 2,
        "llama.rope.dimension_count": 16,
        "llama.vocab_size": 520,
        "general.file_type": {QType.F32: 0, QType.F16: 1, QType.Q8_0: 7, QType.BF16: 32}[matrix_type],
    }
    assert {key: field(reader, key) for key in expected} == expected
    assert field(reader, "llama.rope.freq_base") == pytest.approx(config.rope_theta)
    assert field(reader, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(config.norm_eps)

    weights = dict(model.named_parameters())
    names = {gguf_name(key): key for key in weights} | {"rope_freqs.weight": None}
    assert sorted(t.name for t in reader.tensors) == sorted(names)
    for t in reader.tensors:
        if t.name == "rope_freqs.weight":
            continue
        weight = weights[names[t.name]].detach()
        assert list(reversed(t.shape.tolist())) == list(weight.shape), t.name  # GGUF lists dims innermost first
        want = QType.F32 if weight.dim() == 1 else matrix_type
        assert t.tensor_type == want, t.name
        stored = torch.from_numpy(gguf.quants.dequantize(t.data, t.tensor_type).copy()).reshape(weight.shape)
        if want == QType.Q8_0:  # one fp16 scale per 32 values: error at most about half a step
            assert (stored - weight.float()).abs().max() <= weight.float().abs().max() / 127, t.name
        else:
            reference = weight.to(
                {QType.F32: torch.float32, QType.F16: torch.float16, QType.BF16: torch.bfloat16}[want]
            )
            assert torch.equal(stored, reference.float()), t.name


def test_q8_0_falls_back_to_f16_for_rows_it_cannot_block(tmp_path, tok):
    model = random_model(small_config(dim=48, n_heads=4, multiple_of=64))  # rows of 48: not a multiple of 32
    reader = export(tmp_path, tok, model, "q8_0")
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == QType.F16
    assert types["blk.0.ffn_down.weight"] == QType.Q8_0  # its rows are the 128-wide hidden layer


def test_tied_head_is_left_to_llama_cpp(tmp_path, tok):
    reader = export(tmp_path, tok, random_model(small_config(tie_word_embeddings=True)), None)
    names = {t.name for t in reader.tensors}
    assert "token_embd.weight" in names and "output.weight" not in names


def test_q_k_rows_match_llama_cpp_conversion_of_the_hf_checkpoint(tmp_path, tok):
    """convert_hf_to_gguf.py's LlamaModel.permute applied to HF q_proj/k_proj gives the GGUF's attn_q/attn_k."""

    def llama_cpp_permute(weights: torch.Tensor, n_head: int) -> torch.Tensor:
        return (
            weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2)
            .reshape(weights.shape)
        )

    config = small_config()
    model = random_model(config)
    hf = load_file(ckpt.save(model, tok, tmp_path / "hf", format="hf") / "model.safetensors")
    reader = gguf.GGUFReader(ckpt.convert(tmp_path / "hf", tmp_path / "m.gguf", to="gguf"))
    stored = {t.name: torch.from_numpy(np.array(t.data)) for t in reader.tensors}
    for layer in range(config.n_layers):
        q = hf[f"model.layers.{layer}.self_attn.q_proj.weight"]
        k = hf[f"model.layers.{layer}.self_attn.k_proj.weight"]
        assert torch.equal(stored[f"blk.{layer}.attn_q.weight"], llama_cpp_permute(q, config.n_heads))
        assert torch.equal(stored[f"blk.{layer}.attn_k.weight"], llama_cpp_permute(k, config.kv_heads))


def test_rope_factors_give_herds_llama3_frequencies(tmp_path, tok):
    """llama.cpp divides each base frequency by its factor: that must be herd's scaled frequency."""
    config = small_config(rope_scaling=RopeScaling(factor=8.0, original_max_position_embeddings=256))
    reader = export(tmp_path, tok, random_model(config), None)
    factors = torch.from_numpy(next(t.data for t in reader.tensors if t.name == "rope_freqs.weight").copy())
    plain = rope_frequencies(config.head_dim, config.rope_theta)
    scaled = rope_frequencies(config.head_dim, config.rope_theta, config.rope_scaling)
    assert torch.allclose(plain / factors, scaled, rtol=1e-6)
    assert factors[0] == 1.0 and factors[-1] == pytest.approx(8.0)
    assert ((factors > 1.0) & (factors < 8.0)).sum() == 1  # one smoothed frequency between the two bands
    unscaled = export(tmp_path / "plain", tok, random_model(small_config(rope_scaling=None)), None)
    assert "rope_freqs.weight" not in {t.name for t in unscaled.tensors}


def test_tokenizer_fields(tmp_path, tok):
    reader = export(tmp_path, tok, random_model(small_config(vocab_size=530)), None)  # 10 padding ids
    tokens = field(reader, "tokenizer.ggml.tokens")
    assert field(reader, "tokenizer.ggml.model") == "gpt2"
    assert field(reader, "tokenizer.ggml.pre") == "llama-bpe"
    assert len(tokens) == 530
    assert tokens[ord("a")] == "a" and tokens[ord(" ")] == "Ġ" and tokens[10] == "Ċ"  # GPT-2's byte characters
    assert tokens[256:264] == ["th", "he", "the", "Ġt", "Ġthe", "in", "er", "an"]
    assert tokens[264:520] == sorted(tok.special_tokens, key=tok.special_tokens.__getitem__)
    assert tokens[264] == "<|begin_of_text|>"
    assert tokens[520:] == [f"[PAD{i}]" for i in range(520, 530)]
    assert field(reader, "tokenizer.ggml.token_type") == [1] * 264 + [3] * 256 + [5] * 10
    assert field(reader, "tokenizer.ggml.merges") == [
        "t h",
        "h e",
        "t he",
        "th e",
        "Ġ t",
        "Ġ the",
        "Ġt he",
        "i n",
        "e r",
        "a n",
    ]
    ids = {key: field(reader, f"tokenizer.ggml.{key}_token_id") for key in ("bos", "eos", "eot", "eom")}
    assert ids == {"bos": tok.bos_id, "eos": tok.eos_id, "eot": tok.eot_id, "eom": tok.eom_id}
    assert field(reader, "tokenizer.ggml.add_bos_token") is True
    assert field(reader, "tokenizer.ggml.add_eos_token") is False


def test_chat_template_renders_herds_chat_format(tmp_path, tok):
    reader = export(tmp_path, tok, random_model(small_config()), None)
    template = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(
        field(reader, "tokenizer.chat_template")
    )
    dialogs = [
        [{"role": "user", "content": "Hi!"}],
        [
            {"role": "system", "content": "  Be terse.\n"},
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "tool", "content": '{"result": 4}'},
            {"role": "user", "content": "\nThanks "},
        ],
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
    ]
    for messages in dialogs:
        for prompt in (True, False):
            rendered = template.render(messages=messages, add_generation_prompt=prompt, bos_token="<|begin_of_text|>")
            assert rendered == tok.decode(tok.encode_dialog(messages, add_generation_prompt=prompt))


def test_merges_of_metas_128k_vocabulary_reproduce_tiktoken(meta_tokenizer):
    """The GGUF vocabulary of Meta's tokenizer, run by HF tokenizers' BPE as llama.cpp runs it, gives herd's ids."""
    from tokenizers import Regex, pre_tokenizers
    from tokenizers import Tokenizer as FastTokenizer
    from tokenizers.models import BPE

    tokens, types, merges = vocabulary(meta_tokenizer, 128256)
    n_ranks = meta_tokenizer.n_words - 256
    assert len(merges) == 280147  # as many as the merges of Meta's Llama 3 tokenizer.json
    assert merges[0] == "Ġ Ġ" and types.count(gguf.TokenType.CONTROL) == 256
    bpe = BPE(
        vocab={token: i for i, token in enumerate(tokens[:n_ranks])},
        merges=[tuple(merge.split(" ")) for merge in merges],
        ignore_merges=True,  # as llama.cpp does for llama-bpe, and tiktoken
    )
    fast = FastTokenizer(bpe)
    fast.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PAT_STR), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    texts = TRICKY_TEXTS + ([SHAKESPEARE.read_text()[:300_000]] if SHAKESPEARE.is_file() else [])
    for text in texts:
        assert fast.encode(text, add_special_tokens=False).ids == meta_tokenizer.encode(text), text[:40]


def test_errors(tmp_path, tok):
    src = ckpt.save(random_model(small_config()), tok, tmp_path / "src")
    with pytest.raises(HerdError, match="unknown GGUF type 'q4_k'"):
        ckpt.convert(src, tmp_path / "m.gguf", to="gguf", outtype="q4_k")
    with pytest.raises(HerdError, match="is a directory"):
        ckpt.convert(src, tmp_path, to="gguf")
    with pytest.raises(HerdError, match="GGUF output only"):
        ckpt.convert(src, tmp_path / "hf", to="hf", outtype="f16")
    with pytest.raises(HerdError, match="unknown checkpoint format 'ggml'"):
        ckpt.convert(src, tmp_path / "x", to="ggml")
    small = ckpt.save(random_model(small_config(vocab_size=500)), tok, tmp_path / "small")
    with pytest.raises(HerdError, match="500 embeddings but its tokenizer 520 ids"):
        ckpt.convert(small, tmp_path / "m.gguf", to="gguf")
    assert not (tmp_path / "m.gguf").exists()


def test_cli_convert_to_gguf(tmp_path, tok):
    src = ckpt.save(random_model(small_config()), tok, tmp_path / "src")
    out = tmp_path / "model-q8_0.gguf"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "herd.cli",
            "convert",
            "--model",
            str(src),
            "--to",
            "gguf",
            "--out",
            str(out),
            "--outtype",
            "q8_0",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert field(gguf.GGUFReader(out), "general.file_type") == 7


def test_llama_cpp_runs_the_export_to_herds_greedy_tokens(tmp_path, tok):
    """llama.cpp itself (through llama-cpp-python, a source build) loads the f32 export: its next-token logits match
    herd's and greedy decoding picks the same 12 tokens."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (it builds from source)")
    model = random_model(small_config())
    src = ckpt.save(model, tok, tmp_path / "src")
    path = ckpt.convert(src, tmp_path / "model.gguf", to="gguf")
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, n_threads=1, logits_all=True, verbose=False)
    prompt = tok.encode("Hello world, the", bos=True)
    ours, theirs = list(prompt), list(prompt)
    llm.eval(theirs)
    with torch.inference_mode():
        first = model(torch.tensor([ours]))[0, -1]
    np.testing.assert_allclose(llm.scores[llm.n_tokens - 1], first.numpy(), rtol=1e-3, atol=1e-3)
    for _ in range(12):
        with torch.inference_mode():
            ours.append(int(model(torch.tensor([ours]))[0, -1].argmax()))
        theirs.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval(theirs[-1:])
    assert theirs == ours
