"""herd.checkpoint: exact round trips between the formats, Meta shard merging, config mapping, errors (damaged files,
wrong types, pickles with code, non-finite weights: one line each, from the API and the CLI)."""

import argparse
import dataclasses
import json
import os
import random
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import herd.checkpoint as ckpt
from herd.checkpoint import hf_format, hub
from herd.cli import main
from herd.errors import HerdError
from herd.model import ModelConfig, RopeScaling, build_model, preset
from herd.tokenizer import Tokenizer
from tests.tiny import model_config


@pytest.fixture(scope="module")
def tok(byte_bpe_path) -> Tokenizer:
    """conftest's 264-rank byte-level BPE (520 ids with the specials): small enough to convert quickly."""
    return Tokenizer(byte_bpe_path)


def small_config(**changes) -> ModelConfig:
    """The tiny config with llama3 RoPE scaling and 512 positions."""
    base = model_config(rope_scaling=RopeScaling(factor=8.0, original_max_position_embeddings=64), max_seq_len=512)
    return base.replace(**changes)


def random_model(config: ModelConfig, dtype: torch.dtype = torch.float32, seed: int = 0):
    model = build_model(config, dtype=dtype)
    model.init_weights(seed=seed)
    with torch.no_grad():  # norms away from 1 so that a lost or swapped norm shows
        for name, param in model.named_parameters():
            if "norm" in name:
                param.uniform_(0.5, 1.5)
    return model


def assert_same_weights(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert sa[name].dtype == sb[name].dtype, name
        assert torch.equal(sa[name], sb[name]), name


def assert_one_line(error: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(error.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


# --- round trips -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["herd", "hf", "meta"])
@pytest.mark.parametrize("tied", [False, True])
def test_round_trip_is_bitwise(tmp_path, tok, fmt, tied):
    config = small_config(tie_word_embeddings=tied)
    model = random_model(config)
    out = ckpt.save(model, tok, tmp_path / fmt, format=fmt)
    assert ckpt.detect_format(out) == fmt
    loaded, loaded_tok = ckpt.load(out)
    assert_same_weights(model, loaded)
    assert (loaded.output.weight is loaded.tok_embeddings.weight) == tied
    assert loaded_tok.encode("the then", bos=True) == tok.encode("the then", bos=True)
    got = loaded.config
    assert got.ffn_hidden_dim == config.ffn_hidden_dim
    if fmt == "herd":
        assert got == config
    elif fmt == "hf":  # HF stores intermediate_size only: multiple_of / ffn_dim_multiplier are re-derived
        assert got.replace(multiple_of=config.multiple_of, ffn_dim_multiplier=None) == config
    else:  # Meta's reference passes max_seq_len to Llama.build itself, so params.json leaves it out
        assert got.replace(max_seq_len=config.max_seq_len) == config
    tokens = torch.randint(0, config.vocab_size, (2, 9))
    assert torch.equal(model(tokens), loaded(tokens))


@pytest.mark.parametrize(("first", "second"), [("hf", "herd"), ("meta", "herd"), ("hf", "meta"), ("meta", "hf")])
def test_chained_conversions_are_bitwise(tmp_path, tok, first, second):
    model = random_model(small_config())
    ckpt.save(model, tok, tmp_path / "src", format="herd")
    ckpt.convert(tmp_path / "src", tmp_path / "a", to=first)
    ckpt.convert(tmp_path / "a", tmp_path / "b", to=second)
    loaded, _ = ckpt.load(tmp_path / "b")
    assert_same_weights(model, loaded)


@pytest.mark.parametrize("fmt", ["herd", "hf", "meta"])
def test_bf16_checkpoints_stay_bf16(tmp_path, tok, fmt):
    model = random_model(small_config(), dtype=torch.bfloat16)
    ckpt.save(model, tok, tmp_path, format=fmt)
    loaded, _ = ckpt.load(tmp_path)
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    assert_same_weights(model, loaded)
    assert ckpt.info(tmp_path)["dtype"] == "bfloat16"
    assert loaded.rope_freqs.dtype == torch.float32
    upcast, _ = ckpt.load(tmp_path, dtype="float32")
    assert {p.dtype for p in upcast.parameters()} == {torch.float32}
    assert torch.equal(upcast.tok_embeddings.weight, model.tok_embeddings.weight.float())


def test_sharded_safetensors_round_trip(tmp_path, tok, monkeypatch):
    model = random_model(small_config())
    monkeypatch.setattr("herd.checkpoint.safetensors_io.MAX_SHARD_BYTES", 100_000)
    ckpt.save(model, tok, tmp_path, format="hf")
    shards = sorted(p.name for p in tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 2 and (tmp_path / "model.safetensors.index.json").is_file()
    assert not (tmp_path / "model.safetensors").exists()
    assert_same_weights(model, ckpt.load(tmp_path)[0])
    monkeypatch.undo()
    ckpt.save(model, tok, tmp_path, format="hf")  # re-saving unsharded removes the old shards and index
    assert sorted(p.name for p in tmp_path.glob("model*")) == ["model.safetensors"]
    assert_same_weights(model, ckpt.load(tmp_path)[0])


def test_saving_over_the_loaded_checkpoint(tmp_path, tok):
    """The loaded weights are memory-mapped from the files; saving replaces the files instead of rewriting them."""
    model = random_model(small_config())
    ckpt.save(model, tok, tmp_path, format="herd")
    loaded, _ = ckpt.load(tmp_path)
    ckpt.save(random_model(small_config(), seed=1), tok, tmp_path, format="herd")
    assert_same_weights(model, loaded)


def test_preset_loads_seeded_random_weights():
    a, tok_a = ckpt.load("tiny")
    b, _ = ckpt.load("tiny")
    assert_same_weights(a, b)
    assert a.config == preset("tiny") and tok_a.n_words == 128256
    info = ckpt.info("tiny")
    assert info["format"] == "preset" and info["params"] == a.num_params()


def test_info(tmp_path, tok):
    config = small_config()
    ckpt.save(random_model(config), tok, tmp_path, format="meta")
    info = ckpt.info(tmp_path)
    assert info["format"] == "meta" and info["dtype"] == "float32"
    assert info["params"] == config.num_params()
    assert info["config"]["dim"] == 64
    assert info["size_bytes"] == (tmp_path / "consolidated.00.pth").stat().st_size > 4 * config.num_params()


# --- Meta's format ---------------------------------------------------------------------------------------


def fairscale_split(state: dict[str, torch.Tensor], n: int, embedding_dim: int = 0) -> list[dict]:
    """Split a consolidated state dict into `n` model-parallel shards the way Meta's training code held them."""
    row_parallel = ("attention.wo.weight", "feed_forward.w2.weight")
    shards: list[dict] = [{} for _ in range(n)]
    for name, tensor in state.items():
        if name.endswith("norm.weight"):
            pieces = [tensor.clone() for _ in range(n)]
        elif name == "tok_embeddings.weight":
            pieces = tensor.chunk(n, dim=embedding_dim)
        elif name.endswith(row_parallel):
            pieces = tensor.chunk(n, dim=1)
        else:
            pieces = tensor.chunk(n, dim=0)
        for shard, piece in zip(shards, pieces):
            shard[name] = piece.clone()
    return shards


def test_meta_export_is_the_same_bytes_from_any_process(tmp_path, tok, monkeypatch):
    """The weights file does not carry the temporary name it was written under (torch.save names its zip root
    after the path it gets; that name held the writer's pid)."""
    model = random_model(small_config())
    for pid in (100, 200):
        monkeypatch.setattr(os, "getpid", lambda: pid)
        ckpt.save(model, tok, tmp_path / str(pid), format="meta")
    first, second = ((tmp_path / pid / "consolidated.00.pth").read_bytes() for pid in ("100", "200"))
    assert first == second


@pytest.mark.parametrize("embedding_dim", [0, 1], ids=["llama3-vocab-parallel", "llama2-parallel-embedding"])
def test_meta_shards_merge_to_the_consolidated_model(tmp_path, tok, embedding_dim):
    model = random_model(small_config())
    ckpt.save(model, tok, tmp_path / "one", format="meta")
    sharded = tmp_path / "two"
    shutil.copytree(tmp_path / "one", sharded)
    (sharded / "consolidated.00.pth").unlink()
    for i, shard in enumerate(fairscale_split(model.state_dict(), 2, embedding_dim)):
        torch.save(shard, sharded / f"consolidated.{i:02d}.pth")
    assert_same_weights(ckpt.load(tmp_path / "one")[0], ckpt.load(sharded)[0])


def test_meta_shards_with_repeated_kv_heads(tmp_path, tok):
    """With more shards than kv heads, Meta's resharding puts a copy of each kv head on consecutive shards."""
    config = small_config(n_kv_heads=1)
    model = random_model(config)
    state = model.state_dict()
    shards = fairscale_split(state, 2)
    for shard in shards:
        for name in state:
            if name.endswith(("wk.weight", "wv.weight")):
                shard[name] = state[name].clone()
    ckpt.save(model, tok, tmp_path, format="meta")
    for i, shard in enumerate(shards):
        torch.save(shard, tmp_path / f"consolidated.{i:02d}.pth")
    assert_same_weights(model, ckpt.load(tmp_path)[0])


def test_meta_params_read_by_meta_reference_args(tmp_path, tok):
    """Meta's `Llama.build` does ModelArgs(max_seq_len=..., max_batch_size=..., **params)."""
    args_module = pytest.importorskip("llama_models.llama3.args")
    config = preset("llama3.1-8b").replace(n_layers=1, dim=256, n_heads=4, n_kv_heads=2, vocab_size=tok.n_words)
    ckpt.save(build_model(config, dtype=torch.bfloat16), tok, tmp_path, format="meta")
    params = json.loads((tmp_path / "params.json").read_text())
    args = args_module.ModelArgs(max_seq_len=2048, max_batch_size=4, **params)
    assert (args.dim, args.n_layers, args.n_heads, args.n_kv_heads) == (256, 1, 4, 2)
    assert (args.multiple_of, args.ffn_dim_multiplier, args.use_scaled_rope) == (1024, 1.3, True)
    assert args.vocab_size == tok.n_words
    state = torch.load(tmp_path / "consolidated.00.pth", weights_only=True)
    assert "output.weight" in state and "layers.0.feed_forward.w2.weight" in state


def test_meta_tied_checkpoint_writes_the_head(tmp_path, tok):
    model = random_model(small_config(tie_word_embeddings=True))
    ckpt.save(model, tok, tmp_path, format="meta")
    state = torch.load(tmp_path / "consolidated.00.pth", weights_only=True)
    assert torch.equal(state["output.weight"], state["tok_embeddings.weight"])


# --- the HF config mapping --------------------------------------------------------------------------------

LLAMA31_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}
# Fields of the config.json files of Meta's Hub repos.
HUB_CONFIGS = {
    "llama3-8b": {
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "max_position_embeddings": 8192,
        "rope_scaling": None,
    },
    "llama3.1-70b": {
        "hidden_size": 8192,
        "intermediate_size": 28672,
        "num_hidden_layers": 80,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "max_position_embeddings": 131072,
        "rope_scaling": LLAMA31_ROPE,
    },
    "llama3.1-405b": {
        "hidden_size": 16384,
        "intermediate_size": 53248,
        "num_hidden_layers": 126,
        "num_attention_heads": 128,
        "num_key_value_heads": 8,
        "max_position_embeddings": 131072,
        "rope_scaling": LLAMA31_ROPE,
    },
    "llama3.2-1b": {
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "max_position_embeddings": 131072,
        "tie_word_embeddings": True,
        "rope_scaling": {**LLAMA31_ROPE, "factor": 32.0},
    },
    "llama3.2-3b": {
        "hidden_size": 3072,
        "intermediate_size": 8192,
        "num_hidden_layers": 28,
        "num_attention_heads": 24,
        "num_key_value_heads": 8,
        "max_position_embeddings": 131072,
        "tie_word_embeddings": True,
        "rope_scaling": {**LLAMA31_ROPE, "factor": 32.0},
    },
}


@pytest.mark.parametrize("name", HUB_CONFIGS)
def test_hub_configs_map_to_the_presets(name, tok):
    hf = {
        "model_type": "llama",
        "vocab_size": 128256,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        **HUB_CONFIGS[name],
    }
    config = hf_format.config_from_hf(hf, Path("config.json"))
    expected = preset(name)
    assert config.ffn_hidden_dim == hf["intermediate_size"] == expected.ffn_hidden_dim
    assert config.num_params() == expected.num_params()
    assert config.replace(multiple_of=expected.multiple_of, ffn_dim_multiplier=expected.ffn_dim_multiplier) == expected
    back = hf_format.config_to_hf(config, torch.bfloat16, tok)
    assert {key: back[key] for key in hf} == {**hf, "rope_scaling": back["rope_scaling"]}
    assert hf_format.config_from_hf(back, Path("config.json")) == config


def test_transformers5_rope_parameters_layout():
    hf = {
        "hidden_size": 64,
        "intermediate_size": 200,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "vocab_size": 300,
        "rope_parameters": {**LLAMA31_ROPE, "factor": 32.0, "rope_theta": 123456.0},
    }
    config = hf_format.config_from_hf(hf, Path("config.json"))
    assert config.rope_theta == 123456.0 and config.rope_scaling.factor == 32.0
    assert config.norm_eps == 1e-6  # LlamaConfig's default
    assert config.n_kv_heads == 4 and config.max_seq_len == 2048 and not config.tie_word_embeddings


def test_ffn_params_reproduce_any_intermediate_size():
    rng = random.Random(0)
    cases = [(dim, size) for dim in (2, 4, 6, 64, 96, 4096) for size in (1, 2, 3, 5, 97, 170, 171, 14336)]
    cases += [(2 * rng.randint(1, 10000), rng.randint(1, 100000)) for _ in range(2000)]
    for dim, size in cases:
        multiple_of, multiplier = hf_format.ffn_params(dim, size)
        config = ModelConfig(dim=dim, n_heads=1, n_kv_heads=1, multiple_of=multiple_of, ffn_dim_multiplier=multiplier)
        assert config.ffn_hidden_dim == size, (dim, size)


def test_hf_name_table_round_trips():
    names = list(build_model(small_config(), device="meta").state_dict())
    hf_names = [hf_format.hf_name(name) for name in names]
    assert len(set(hf_names)) == len(names)
    assert [hf_format.herd_name(name) for name in hf_names] == names
    assert hf_format.hf_name("layers.1.feed_forward.w1.weight") == "model.layers.1.mlp.gate_proj.weight"
    assert hf_format.herd_name("model.layers.0.self_attn.q_proj.bias") is None


def test_rotary_permutation_inverts():
    weight = torch.arange(8 * 6 * 3, dtype=torch.float32).view(8 * 6, 3)
    hf = hf_format.to_hf_rotary(weight, n_heads=6)
    assert torch.equal(hf_format.from_hf_rotary(hf, n_heads=6), weight)
    assert torch.equal(hf[:4, 0], weight[[0, 2, 4, 6], 0])  # head 0: the even rows first, then the odd ones
    assert torch.equal(hf[4:8, 0], weight[[1, 3, 5, 7], 0])


# --- errors ----------------------------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path, tok):
    def save(fmt: str) -> Path:
        return ckpt.save(random_model(small_config()), tok, tmp_path / fmt, format=fmt)

    return save


def test_error_missing_directory(tmp_path):
    with pytest.raises(HerdError) as e:
        ckpt.load(tmp_path / "nope")
    assert_one_line(e, "model not found", "nope")


def test_error_unknown_format(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(HerdError) as e:
        ckpt.load(tmp_path)
    assert_one_line(e, "not a model directory", "params.json", "consolidated", "model*.safetensors", "herd")


def test_error_file_instead_of_directory(tiny_checkpoint):
    with pytest.raises(HerdError) as e:
        ckpt.load(tiny_checkpoint("herd") / "model.safetensors")
    assert_one_line(e, "is a file", "directory")


@pytest.mark.parametrize("fmt", ["herd", "hf"])
def test_error_missing_weights_file(saved, fmt):
    directory = saved(fmt)
    (directory / "model.safetensors").unlink()
    with pytest.raises(HerdError) as e:
        ckpt.load(directory)
    assert_one_line(e, "no weights", "model.safetensors")


def test_error_missing_shard(saved, monkeypatch, tok):
    directory = saved("hf")
    monkeypatch.setattr("herd.checkpoint.safetensors_io.MAX_SHARD_BYTES", 100_000)
    ckpt.save(ckpt.load(directory)[0], tok, directory, format="hf")
    shard = sorted(directory.glob("model-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(HerdError) as e:
        ckpt.load(directory)
    assert_one_line(e, shard.name, "missing")


def test_error_missing_params_json(saved):
    directory = saved("meta")
    (directory / "params.json").unlink()
    with pytest.raises(HerdError) as e:
        ckpt.load(directory)
    assert_one_line(e, "not a model directory")


@pytest.mark.parametrize("fmt", ["herd", "hf"])
@pytest.mark.parametrize("keep", [0.5, 0.001], ids=["data-cut", "header-cut"])
def test_error_truncated_safetensors(saved, fmt, keep):
    file = saved(fmt) / "model.safetensors"
    data = file.read_bytes()
    file.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(HerdError) as e:
        ckpt.load(file.parent)
    assert_one_line(e, str(file), "truncated or corrupt")


@pytest.mark.parametrize("keep", [0.5, 0.0])
def test_error_truncated_pth(saved, keep):
    file = saved("meta") / "consolidated.00.pth"
    data = file.read_bytes()
    file.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(HerdError) as e:
        ckpt.load(file.parent)
    assert_one_line(e, str(file), "truncated or corrupt")


def test_error_wrong_shape(saved):
    directory = saved("herd")
    config = json.loads((directory / "config.json").read_text())
    config["model"]["n_kv_heads"] = 4
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(HerdError) as e:
        ckpt.load(directory)
    assert_one_line(e, "layers.0.attention.wk.weight", "(32, 64)", "(64, 64)")


def test_error_wrong_shape_hf(saved):
    directory = saved("hf")
    config = json.loads((directory / "config.json").read_text())
    config["intermediate_size"] = 100
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(HerdError) as e:
        ckpt.load(directory)
    assert_one_line(e, "layers.0.feed_forward.w1.weight", "(192, 64)", "(100, 64)")


def test_error_missing_and_unexpected_tensors(saved):
    directory = saved("hf")
    file = directory / "model.safetensors"
    tensors = dict(ckpt.load(directory)[0].state_dict())
    tensors = {hf_format.hf_name(k): v.clone() for k, v in tensors.items()}
    bias = torch.zeros(64)
    save_file({**tensors, "model.layers.0.self_attn.q_proj.bias": bias}, file)
    with pytest.raises(HerdError) as e:
        ckpt.load(directory)
    assert_one_line(e, "1 tensor(s) the model does not use", "model.layers.0.self_attn.q_proj.bias")
    del tensors["model.norm.weight"]
    save_file(tensors, file)
    with pytest.raises(HerdError) as e:
        ckpt.load(directory)
    assert_one_line(e, "lacks 1 tensor(s)", "norm.weight")


def test_error_meta_shards_disagree(saved):
    directory = saved("meta")
    state = torch.load(directory / "consolidated.00.pth", weights_only=True)
    shards = fairscale_split(state, 2)
    del shards[1]["norm.weight"]
    for i, shard in enumerate(shards):
        torch.save(shard, directory / f"consolidated.{i:02d}.pth")
    with pytest.raises(HerdError) as e:
        ckpt.load(directory)
    assert_one_line(e, "consolidated.00.pth", "consolidated.01.pth", "norm.weight")


def test_error_hf_dir_without_tokenizer(saved):
    directory = saved("hf")
    shutil.rmtree(directory / "original")
    (directory / "tokenizer.json").unlink()
    with pytest.raises(HerdError) as e:
        ckpt.load(directory)
    assert_one_line(e, "no tokenizer in", "original/tokenizer.model", "tokenizer.json")


def test_error_unsupported_hf_model(saved):
    directory = saved("hf")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "model_type": "mistral"}))
    with pytest.raises(HerdError) as e:
        ckpt.load(directory)
    assert_one_line(e, "'mistral'", "Llama")


def test_error_bad_save_format_and_dtype(tmp_path, tok):
    model = random_model(small_config())
    with pytest.raises(HerdError) as e:
        ckpt.save(model, tok, tmp_path, format="gguf")
    assert_one_line(e, "'gguf'", "herd, hf, meta")
    with pytest.raises(HerdError) as e:
        ckpt.load("tiny", dtype="int8")
    assert_one_line(e, "'int8'", "bfloat16")


# --- damaged files, wrong types, non-finite weights: one line each ------------------------------------------


def edit_weights(directory: Path, fmt: str, edit) -> None:
    """Rewrite a single-file checkpoint's stored tensors with `edit(tensors, name_of)`, in place (name_of maps a herd
    weight name to the stored one)."""
    name_of = hf_format.hf_name if fmt == "hf" else (lambda name: name)
    if fmt == "meta":
        file = directory / "consolidated.00.pth"
        tensors = torch.load(file, weights_only=True)
        edit(tensors, name_of)
        torch.save(tensors, file)
    else:
        file = directory / "model.safetensors"
        tensors = load_file(file)
        edit(tensors, name_of)
        save_file(tensors, file)


def run_cli(capsys, *args: str) -> str:
    """`herd ARGS` in this process: asserts exit status 2 and one line on stderr, and returns that line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    # generate prints its memory plan before loading, so before an error the load finds
    err = "".join(line for line in capsys.readouterr().err.splitlines(keepends=True)
                  if not line.startswith("memory plan per rank"))
    assert exit_.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def generate_error(capsys, directory: Path) -> str:
    """The one-line error of `herd generate --model DIR`."""
    return run_cli(capsys, "generate", "--model", str(directory), "--prompt", "hi", "--max-new-tokens", "2")


def cli_errors(capsys, directory: Path) -> list[str]:
    """The one-line errors of `herd info DIR` and `herd generate --model DIR`."""
    return [run_cli(capsys, "info", str(directory)), generate_error(capsys, directory)]


@pytest.mark.parametrize("fmt", ["herd", "hf"])
@pytest.mark.parametrize(
    "content",
    [lambda data: data[: len(data) // 2], lambda data: b"", lambda data: b'{"not": "safetensors"}\n' * 100],
    ids=["truncated", "empty", "not-safetensors"],
)
def test_info_and_generate_name_a_damaged_safetensors_file_in_one_line(saved, capsys, fmt, content):
    file = saved(fmt) / "model.safetensors"
    file.write_bytes(content(file.read_bytes()))
    for line in cli_errors(capsys, file.parent):
        assert f"cannot read {file}: " in line and "truncated or corrupt" in line


@pytest.mark.parametrize("fmt", ["herd", "hf", "meta"])
def test_info_of_a_weight_file_without_tensors(saved, capsys, fmt):
    directory = saved(fmt)
    edit_weights(directory, fmt, lambda tensors, name_of: tensors.clear())
    assert "holds no tensors" in run_cli(capsys, "info", str(directory))


@pytest.mark.parametrize("fmt", ["herd", "hf", "meta"])
def test_integer_weights_are_named_with_their_dtype(saved, capsys, fmt):
    directory = saved(fmt)
    name = "layers.1.feed_forward.w2.weight"
    edit_weights(directory, fmt, lambda t, name_of: t.update({name_of(name): t[name_of(name)].to(torch.int32)}))
    with pytest.raises(HerdError) as e:
        ckpt.load(directory)
    assert_one_line(e, f"tensor {name} is stored as int32", "float32, bfloat16 or float16")
    assert "stored as int32" in generate_error(capsys, directory)  # `herd info` reads no weights


MODEL_FIELDS = [f.name for f in dataclasses.fields(ModelConfig) if f.name != "extra"]


@pytest.mark.parametrize("field", MODEL_FIELDS)
def test_config_fields_of_the_wrong_type_are_named(saved, capsys, field):
    directory = saved("herd")
    config = json.loads((directory / "config.json").read_text())
    value = config["model"].get(field) or 1.5
    config["model"][field] = json.dumps(value) if field != "rope_scaling" else "yes"  # e.g. "dim": "64"
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(HerdError) as e:
        ckpt.load(directory)
    path, value = directory / "config.json", config["model"][field]
    assert_one_line(e, str(path), f"model config: {field} must be ", f"got str {value!r}")
    assert all(f"{field} must be" in line for line in cli_errors(capsys, directory))


@pytest.mark.parametrize(
    ("fmt", "file", "edit", "message"),
    [
        ("herd", "config.json", lambda c: c["model"]["rope_scaling"].update(factor="8"),
         "rope_scaling.factor must be a number, got str '8'"),
        ("hf", "config.json", lambda c: c.update(hidden_size="64"), "hidden_size must be an integer, got str '64'"),
        ("hf", "config.json", lambda c: c.update(num_attention_heads=0), "n_heads must be positive, got 0"),
        ("hf", "config.json", lambda c: c.update(tie_word_embeddings="no"), "tie_word_embeddings must be true or"),
        ("meta", "params.json", lambda c: c.update(n_kv_heads=0), "n_kv_heads must be positive, got 0"),
        ("meta", "params.json", lambda c: c.update(norm_eps=None), "norm_eps must be a number, got NoneType None"),
    ],
)
def test_config_values_of_other_formats_are_checked_too(saved, fmt, file, edit, message):
    path = saved(fmt) / file
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))
    with pytest.raises(HerdError) as e:
        ckpt.load(path.parent)
    assert_one_line(e, str(path), message)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize(
    ("extra", "refused"), [(_RunsCode(), "posix.system"), (argparse.Namespace(x=1), "argparse.Namespace")]
)
def test_a_pickle_with_code_is_refused_as_such_not_as_truncated(saved, capsys, extra, refused):
    file = saved("meta") / "consolidated.00.pth"
    torch.save({**torch.load(file, weights_only=True), "extra": extra}, file)
    with pytest.raises(HerdError) as e:
        ckpt.load(file.parent)
    assert_one_line(e, f"refusing {file}", "holds code or objects other than tensors", refused)
    assert "truncated" not in str(e.value)
    assert all("holds code" in line for line in cli_errors(capsys, file.parent))


@pytest.mark.parametrize("fmt", ["herd", "hf", "meta"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused_naming_the_tensor(saved, capsys, fmt, value):
    directory = saved(fmt)
    name = "layers.1.feed_forward.w2.weight"
    where = torch.tensor([3, 77])
    edit_weights(directory, fmt, lambda t, name_of: t[name_of(name)].view(-1).index_fill_(0, where, value))
    with pytest.raises(HerdError) as e:
        ckpt.load(directory)
    assert_one_line(e, f"tensor {name} holds 2 NaN or infinite value(s) of 12,288", "check_finite=False")
    assert f"tensor {name} holds 2 NaN" in generate_error(capsys, directory)
    model, _ = ckpt.load(directory, check_finite=False)  # the explicit opt-out, to inspect the damage
    assert (~torch.isfinite(model.get_parameter(name))).sum() == 2


def test_finite_check_sees_overflow_of_the_cast_and_only_real_non_finite_values(tmp_path, tok):
    model = random_model(small_config())
    with torch.no_grad():
        model.norm.weight[0] = 1e5  # finite in float32, infinite in float16
    ckpt.save(model, tok, tmp_path, format="herd")
    assert torch.isfinite(ckpt.load(tmp_path)[0].norm.weight).all()
    with pytest.raises(HerdError) as e:
        ckpt.load(tmp_path, dtype="float16")
    assert_one_line(e, "tensor norm.weight holds 1 NaN or infinite value(s)")
    with torch.no_grad():  # float16 weights whose sum overflows though each is finite: not refused
        model.norm.weight[0] = 1.0
        model.tok_embeddings.weight.fill_(60000.0)
    ckpt.save(model.half(), tok, tmp_path, format="herd")
    assert not torch.isfinite(ckpt.load(tmp_path)[0].tok_embeddings.weight.sum())
    assert torch.isfinite(ckpt.load(tmp_path)[0].tok_embeddings.weight).all()


# --- the Hugging Face Hub --------------------------------------------------------------------------------


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty HF cache with downloads forbidden, as HF_HUB_OFFLINE=1 makes it."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_hub_offline_error(offline_hub):
    with pytest.raises(HerdError) as e:
        ckpt.load("meta-llama/Llama-3.2-1B")
    assert_one_line(e, "'meta-llama/Llama-3.2-1B'", "HF_HUB_OFFLINE=1", "herd.load('/path/to/dir')")


def test_hub_cached_snapshot_loads_offline(offline_hub, tiny_checkpoint):
    """A model in the standard cache layout (refs/main -> snapshots/<commit>/) loads without network."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = offline_hub / "models--someone--tiny-llama"
    shutil.copytree(tiny_checkpoint("hf"), repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    model, _ = ckpt.load("someone/tiny-llama")
    assert_same_weights(model, ckpt.load(repo / "snapshots" / commit)[0])
    assert ckpt.info("someone/tiny-llama")["format"] == "hf"


def test_hub_ids():
    assert hub.is_hub_id("meta-llama/Llama-3.1-8B-Instruct")
    assert not hub.is_hub_id("/abs/path")
    assert not hub.is_hub_id("../up/one")
    assert not hub.is_hub_id("a/b/c")
    assert not hub.is_hub_id("tiny")
