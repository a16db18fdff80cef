"""The transformer itself: published configs, meta-device construction, document masks, RoPE."""

import math

import pytest
import torch

from herd.errors import HerdError
from herd.model import ModelConfig, RopeScaling, build_model, preset
from herd.model.masking import document_positions
from herd.model.rope import rope_frequencies
from tests.tiny import model_config


def small_config(**changes) -> ModelConfig:
    return model_config(vocab_size=300, multiple_of=16).replace(**changes)


@pytest.mark.parametrize(
    ("name", "params_b", "hidden"),
    [
        ("llama3-8b", 8.030, 14336),
        ("llama3-70b", 70.554, 28672),
        ("llama3.1-405b", 405.853, 53248),
        ("llama3.2-1b", 1.236, 8192),
        ("llama3.2-3b", 3.213, 8192),
    ],
)
def test_published_sizes(name, params_b, hidden):
    config = preset(name)
    assert config.ffn_hidden_dim == hidden
    assert config.num_params() / 1e9 == pytest.approx(params_b, abs=1e-3)
    assert config.vocab_size == 128256 and config.rope_theta == 500000.0


def test_meta_device_allocates_nothing():
    model = build_model(preset("llama3-70b"), device="meta", dtype=torch.bfloat16)
    assert all(p.is_meta for p in model.parameters())
    assert model.num_params() == preset("llama3-70b").num_params()


def test_param_count_matches_module():
    for name in ("tiny", "llama3-125m"):
        config = preset(name)
        assert build_model(config, device="meta").num_params() == config.num_params()


def test_tied_embeddings_share_storage():
    model = build_model(small_config(tie_word_embeddings=True))
    assert model.output.weight is model.tok_embeddings.weight


def test_rope_freqs_stay_fp32_under_bf16():
    model = build_model(small_config(), dtype=torch.bfloat16)
    assert model.rope_freqs.dtype == torch.float32
    assert model.output.weight.dtype == torch.bfloat16


def test_llama3_rope_scaling_bands():
    freqs = rope_frequencies(128, 500000.0)
    scaled = rope_frequencies(128, 500000.0, RopeScaling(factor=8.0))
    wavelen = 2 * math.pi / freqs
    high = wavelen < 8192 / 4
    low = wavelen > 8192 / 1
    assert torch.equal(scaled[high], freqs[high])
    assert torch.allclose(scaled[low], freqs[low] / 8)
    middle = ~(high | low)
    assert middle.any() and ((scaled[middle] < freqs[middle]) & (scaled[middle] > freqs[middle] / 8)).all()


def test_document_positions_restart():
    doc_ids = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2, 2]])
    assert document_positions(doc_ids).tolist() == [[0, 1, 2, 0, 1, 0, 1, 2, 3]]


@pytest.mark.parametrize("config", [small_config(), small_config(n_kv_heads=4), small_config(tie_word_embeddings=True)])
def test_document_mask_equals_documents_alone(config):
    torch.manual_seed(0)
    model = build_model(config).eval()
    model.init_weights(seed=1)
    lengths = [[5, 11, 3, 13], [32]]
    rows, doc_rows = [], []
    for row in lengths:
        rows.append(torch.randint(0, config.vocab_size, (sum(row),)))
        doc_rows.append(torch.repeat_interleave(torch.arange(len(row)), torch.tensor(row)))
    tokens, doc_ids = torch.stack(rows), torch.stack(doc_rows)
    with torch.no_grad():
        packed = model(tokens, doc_ids=doc_ids)
        for b, row in enumerate(lengths):
            start = 0
            for n in row:
                alone = model(tokens[b : b + 1, start : start + n])[0]
                assert (packed[b, start : start + n] - alone).abs().max() < 1e-5
                start += n
    # and the mask really matters: without it the later documents see the earlier ones
    with torch.no_grad():
        unmasked = model(tokens)
    assert (unmasked[0, 5:16] - packed[0, 5:16]).abs().max() > 1e-3


def test_forward_errors_are_clear():
    model = build_model(small_config(max_seq_len=16))
    with pytest.raises(HerdError, match="exceeds the model's context of 16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(HerdError, match=r"\[batch, length\]"):
        model(torch.zeros(5, dtype=torch.long))
    with pytest.raises(HerdError, match="n_kv_heads"):
        small_config(n_kv_heads=3)


def test_params_json_round_trip():
    config = preset("llama3.1-8b")
    params = config.to_params()
    assert params["use_scaled_rope"] is True
    assert ModelConfig.from_params(params) == config
    meta_8b = {
        "dim": 4096, "n_layers": 32, "n_heads": 32, "n_kv_heads": 8, "vocab_size": 128256, "multiple_of": 1024,
        "ffn_dim_multiplier": 1.3, "norm_eps": 1e-05, "rope_theta": 500000.0, "use_scaled_rope": True,
    }
    read = ModelConfig.from_params(meta_8b)
    assert read.rope_scaling == RopeScaling() and read.ffn_hidden_dim == 14336
