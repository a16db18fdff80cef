"""herd against HF transformers' LlamaForCausalLM: equal logits through the HF, Meta and herd->HF paths,
and HF tokenizer files that give Meta's ids."""

import json
import shutil

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

import herd.checkpoint as ckpt
from herd.checkpoint import hf_tokenizer
from herd.model import ModelConfig, RopeScaling, build_model
from herd.tokenizer import Tokenizer, default_tokenizer_path, read_bpe_file

TOLERANCE = 1e-4
BASE = {
    "hidden_size": 64,
    "intermediate_size": 176,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 520,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "max_position_embeddings": 256,
    "tie_word_embeddings": False,
}
# original_max_position_embeddings 64 puts head_dim 16's wavelengths in all three bands of llama3 scaling.
ROPE_31 = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}
CONFIGS = {
    "gqa": {},
    "mha": {"num_key_value_heads": 4},
    "tied": {"tie_word_embeddings": True},
    "rope-3.1": {"rope_scaling": ROPE_31},
    "rope-3.2-tied": {"rope_scaling": {**ROPE_31, "factor": 32.0}, "tie_word_embeddings": True},
    "ffn-below-8d/3": {"intermediate_size": 97},
    "ffn-odd-mqa": {"intermediate_size": 203, "num_attention_heads": 8, "num_key_value_heads": 1},
}


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, BASE["vocab_size"], (2, 40), generator=torch.Generator().manual_seed(0))


def hf_model(overrides: dict) -> LlamaForCausalLM:
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**{**BASE, **overrides})).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.uniform_(0.5, 1.5)
            else:
                param.normal_(0.0, 0.1)
    return model


def hf_logits(model: LlamaForCausalLM, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens).logits


def herd_logits(model, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


@pytest.mark.parametrize("sharded", [False, True], ids=["single-file", "sharded"])
@pytest.mark.parametrize("name", CONFIGS)
def test_logits_match_hf_through_hf_dirs(tmp_path, byte_bpe_path, tokens, name, sharded):
    """HF save_pretrained -> herd.load, then herd.save(format="hf") -> LlamaForCausalLM.from_pretrained."""
    reference = hf_model(CONFIGS[name])
    expected = hf_logits(reference, tokens)
    hf_dir = tmp_path / "hf"
    reference.save_pretrained(hf_dir, max_shard_size="40KB" if sharded else "5GB")
    assert (hf_dir / "model.safetensors.index.json").is_file() == sharded
    shutil.copy(byte_bpe_path, hf_dir / "tokenizer.model")

    model, tok = ckpt.load(hf_dir)
    assert max_diff(herd_logits(model, tokens), expected) <= TOLERANCE

    ckpt.save(model, tok, tmp_path / "from-herd", format="hf")
    back = LlamaForCausalLM.from_pretrained(tmp_path / "from-herd").eval()
    assert back.config.intermediate_size == reference.config.intermediate_size
    assert back.config.tie_word_embeddings == reference.config.tie_word_embeddings
    assert max_diff(hf_logits(back, tokens), expected) <= TOLERANCE


# Meta's names for HF's, and the HF->Meta rotary reordering, written here independently of herd's table.
META_TOP_LEVEL = {
    "model.embed_tokens.weight": "tok_embeddings.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "output.weight",
}
META_LAYER = {
    "self_attn.q_proj": "attention.wq",
    "self_attn.k_proj": "attention.wk",
    "self_attn.v_proj": "attention.wv",
    "self_attn.o_proj": "attention.wo",
    "mlp.gate_proj": "feed_forward.w1",
    "mlp.down_proj": "feed_forward.w2",
    "mlp.up_proj": "feed_forward.w3",
    "input_layernorm": "attention_norm",
    "post_attention_layernorm": "ffn_norm",
}


def interleave_rotary_rows(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Meta row h*d + 2i is HF row h*d + i, Meta row h*d + 2i + 1 is HF row h*d + d/2 + i."""
    head_dim = weight.shape[0] // n_heads
    order = [
        h * head_dim + half * head_dim // 2 + i for h in range(n_heads) for i in range(head_dim // 2) for half in (0, 1)
    ]
    return weight[order]


def write_meta_dir(reference: LlamaForCausalLM, directory, tok_file) -> None:
    config = reference.config
    state = {}
    for name, tensor in reference.state_dict().items():
        if name in META_TOP_LEVEL:
            state[META_TOP_LEVEL[name]] = tensor.clone()
            continue
        layer, module = name.removeprefix("model.layers.").removesuffix(".weight").split(".", 1)
        if module == "self_attn.q_proj":
            tensor = interleave_rotary_rows(tensor, config.num_attention_heads)
        elif module == "self_attn.k_proj":
            tensor = interleave_rotary_rows(tensor, config.num_key_value_heads)
        state[f"layers.{layer}.{META_LAYER[module]}.weight"] = tensor.clone()
    directory.mkdir()
    torch.save(state, directory / "consolidated.00.pth")
    rope = config.rope_parameters if hasattr(config, "rope_parameters") else config.rope_scaling
    scaled = bool(rope) and rope.get("rope_type") == "llama3"
    params = {
        "dim": config.hidden_size,
        "n_layers": config.num_hidden_layers,
        "n_heads": config.num_attention_heads,
        "n_kv_heads": config.num_key_value_heads,
        "vocab_size": config.vocab_size,
        # any SwiGLU width in 1..multiple_of rounds up to multiple_of: int(0.01 * int(8 * 64 / 3)) = 1
        "multiple_of": config.intermediate_size,
        "ffn_dim_multiplier": 0.01,
        "norm_eps": config.rms_norm_eps,
        "rope_theta": 500000.0,
        "use_scaled_rope": scaled,
    }
    if scaled:
        params["rope_scaling"] = {
            k: rope[k] for k in ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
        }
    (directory / "params.json").write_text(json.dumps(params))
    shutil.copy(tok_file, directory / "tokenizer.model")


@pytest.mark.parametrize("name", CONFIGS)
def test_logits_match_hf_through_meta_dir(tmp_path, byte_bpe_path, tokens, name):
    reference = hf_model(CONFIGS[name])
    write_meta_dir(reference, tmp_path / "meta", byte_bpe_path)
    model, _ = ckpt.load(tmp_path / "meta")
    assert ckpt.detect_format(tmp_path / "meta") == "meta"
    assert max_diff(herd_logits(model, tokens), hf_logits(reference, tokens)) <= TOLERANCE


def test_herd_model_saved_as_hf_matches_transformers(tmp_path, byte_bpe_path, tokens):
    """A herd-native model (herd's init, tied head, 3.2 RoPE) through save(format="hf") and from_pretrained."""
    config = ModelConfig(
        dim=96,
        n_layers=3,
        n_heads=6,
        n_kv_heads=2,
        vocab_size=520,
        multiple_of=48,
        ffn_dim_multiplier=1.3,
        rope_scaling=RopeScaling(factor=32.0, original_max_position_embeddings=64),
        max_seq_len=128,
        tie_word_embeddings=True,
    )
    model = build_model(config)
    model.init_weights(seed=3)
    ckpt.save(model, Tokenizer(byte_bpe_path), tmp_path, format="hf")
    reference = LlamaForCausalLM.from_pretrained(tmp_path).eval()
    assert reference.config.intermediate_size == config.ffn_hidden_dim
    assert max_diff(hf_logits(reference, tokens), herd_logits(model, tokens)) <= TOLERANCE


def test_saved_hf_tokenizer_loads_in_transformers(tmp_path, byte_bpe_path):
    tok = Tokenizer(byte_bpe_path)
    ckpt.save(
        build_model(ModelConfig(dim=64, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=tok.n_words, multiple_of=16)),
        tok,
        tmp_path,
        format="hf",
    )
    hf_tok = AutoTokenizer.from_pretrained(tmp_path)
    for text in ["the then", " the other", "ünïcödé, 12345!\n\n\tx", ""]:
        assert hf_tok(text)["input_ids"] == tok.encode(text, bos=True)
        assert hf_tok.decode(tok.encode(text)) == text
    assert (hf_tok.bos_token_id, hf_tok.eos_token_id) == (tok.bos_id, tok.eos_id)


@pytest.fixture(scope="module")
def meta_hf_tokenizer_dir(tmp_path_factory, meta_tokenizer):
    """HF tokenizer files for Meta's 128K tokenizer, with the tiktoken copy removed."""
    directory = tmp_path_factory.mktemp("hf-tok")
    hf_tokenizer.write_tokenizer(meta_tokenizer, directory, max_seq_len=8192)
    shutil.rmtree(directory / "original")
    return directory


SAMPLES = [
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "def f(x):\n    return x ** 2  # squares\n\n\n",
    "Ünïcödé: 你好，世界 — こんにちは 🦙🦙 émoji\r\n  \t tabs",
    "1234567890 3.14159 $$$ ### <|not_special|>",
]


def test_tokenizer_json_rebuilds_meta_ranks(meta_hf_tokenizer_dir, tmp_path, meta_tokenizer):
    files = sorted(p.name for p in meta_hf_tokenizer_dir.iterdir())
    rebuilt = hf_tokenizer.read_tokenizer(meta_hf_tokenizer_dir)
    assert sorted(p.name for p in meta_hf_tokenizer_dir.iterdir()) == files  # nothing written
    assert rebuilt.path == meta_hf_tokenizer_dir / "tokenizer.json"
    assert read_bpe_file(rebuilt.save(tmp_path / "rebuilt.model")) == read_bpe_file(default_tokenizer_path())
    assert rebuilt.n_words == meta_tokenizer.n_words == 128256
    for text in SAMPLES:
        assert rebuilt.encode(text, bos=True) == meta_tokenizer.encode(text, bos=True)


def test_tokenizer_json_gives_meta_ids_in_transformers(meta_hf_tokenizer_dir, meta_tokenizer):
    hf_tok = AutoTokenizer.from_pretrained(meta_hf_tokenizer_dir)
    for text in SAMPLES:
        assert hf_tok(text)["input_ids"] == meta_tokenizer.encode(text, bos=True)
    assert hf_tok.convert_tokens_to_ids("<|eot_id|>") == meta_tokenizer.eot_id
