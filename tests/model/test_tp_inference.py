"""Tensor-parallel inference (herd.model.tensor_parallel): the sharding spec, its one-line errors, and tp=2 / tp=4
ranks under torchrun (gloo, CPU) reproducing the single-process logits and greedy tokens."""

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import herd
from herd.checkpoint import meta_format
from herd.errors import HerdError
from herd.generation.generate import generate_tokens
from herd.model import ModelConfig, build_model
from herd.model.tensor_parallel import (
    backend_for,
    check_config,
    init_tensor_parallel,
    shard,
    shard_bounds,
    shard_dim,
)
from herd.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = [[1, 5, 9, 200, 31, 7, 44], [1, 300, 12, 8, 99, 100, 101, 102, 400], [1, 2, 3, 4, 5, 6]]


def tp_model() -> torch.nn.Module:
    """Llama 3-shaped and random: 8 query heads over 4 KV heads (GQA), so tp=4 leaves one KV head a rank."""
    config = ModelConfig(dim=64, n_layers=2, n_heads=8, n_kv_heads=4, vocab_size=520, multiple_of=32,
                         ffn_dim_multiplier=None, max_seq_len=64)
    model = build_model(config)
    model.init_weights(seed=7)
    return model.eval()


def torchrun(nproc: int, *args: str, stdin: str | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    """`args` (a script and its arguments, or -m module ...) under torchrun with `nproc` CPU ranks; rank 0 reads
    `stdin`."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT, check=False,
                            input=stdin)
    assert result.returncode == 0, result.stderr[-6000:]
    return result


def test_shard_spec_follows_meta_reference():
    assert shard_dim("tok_embeddings.weight") == 0 and shard_dim("output.weight") == 0
    assert [shard_dim(f"layers.11.attention.{w}.weight") for w in ("wq", "wk", "wv", "wo")] == [0, 0, 0, 1]
    assert [shard_dim(f"layers.0.feed_forward.{w}.weight") for w in ("w1", "w2", "w3")] == [0, 1, 0]
    assert shard_dim("norm.weight") is None and shard_dim("layers.2.ffn_norm.weight") is None
    assert shard_dim("layers.0.attention.wo.scale") is None and shard_dim("layers.0.attention.wq.scale") == 0
    with pytest.raises(HerdError, match="no split"):
        shard_dim("layers.0.attention.rotary.weight")
    weight = torch.arange(24.0).view(6, 4)
    assert torch.equal(torch.cat([shard(weight, 0, r, 3) for r in range(3)]), weight)
    assert torch.equal(shard(weight, 1, 1, 2), weight[:, 2:])
    assert shard(weight, None, 1, 2) is weight
    assert shard_bounds(128256, 7, 8) == (7 * 16032, 8 * 16032)


def test_tp_errors_are_one_line(monkeypatch):
    config = tp_model().config
    with pytest.raises(HerdError, match="n_kv_heads of 4 is not divisible by --tp 8"):
        check_config(config.replace(n_heads=16, dim=128), 8)
    with pytest.raises(HerdError, match="n_heads of 8 is not divisible by --tp 3"):
        check_config(config, 3)
    with pytest.raises(HerdError, match="vocab_size of 521"):
        check_config(config.replace(vocab_size=521), 2)
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert init_tensor_parallel(1, "cpu") is None
    with pytest.raises(HerdError, match="runs under torchrun: torchrun --nproc-per-node 2"):
        init_tensor_parallel(2, "cpu")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(HerdError, match="started 4 processes but --tp is 2"):
        init_tensor_parallel(2, "cpu")


def test_backend_follows_the_models_device_not_the_visible_gpus(monkeypatch):
    """A CPU model joins with gloo on a machine whose GPUs are visible (nccl cannot reduce CPU tensors); a CUDA
    model with nccl."""
    assert backend_for("cpu") == backend_for(torch.device("cpu")) == "gloo"
    assert backend_for("cuda") == backend_for("cuda:1") == "nccl"
    joined = []

    def init_process_group(backend, **_kwargs):  # records the backend init_tensor_parallel asks for, joins nothing
        joined.append(backend)
        raise RuntimeError("recorded")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "init_process_group", init_process_group)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="recorded"):
        init_tensor_parallel(2, "cpu")
    assert joined == ["gloo"]


def _check_ranks(directory: Path, tp: int) -> None:
    """Every rank's logits within 1e-5 of the single-process model's, the same greedy tokens, rank 0's samples."""
    model = tp_model()
    with torch.inference_mode():
        logits = model(torch.tensor([p[:6] for p in PROMPTS]))
    greedy = [r.tokens for r in generate_tokens(model, PROMPTS, max_new_tokens=10)]
    ranks = [torch.load(directory / f"rank{r}.pt") for r in range(tp)]
    for result in ranks:
        assert result["kv_heads"] == 4 // tp and result["embedding_rows"] == 520 // tp
        assert (result["logits"] - logits).abs().max() < 1e-5
        assert result["greedy"] == greedy
        assert result["sampled"] == ranks[0]["sampled"]  # rank 0 samples, every rank continues with its choice


@pytest.mark.parametrize("tp", [2, 4])
def test_tp_generate_equals_single_process(tmp_path, tp):
    torchrun(tp, str(ROOT / "tests/model/tp_worker.py"), str(tmp_path), str(tp))
    _check_ranks(tmp_path, tp)


@pytest.mark.slow
def test_tp2_compiled_decode_step_keeps_the_greedy_tokens(tmp_path):
    """compile=True (--compile on) under tp=2: the decode step, its all-reduces and the logits' all-gather go through
    torch.compile (inductor on CPU) on each rank and give one process's greedy tokens; auto keeps TP eager."""
    torchrun(2, str(ROOT / "tests/model/tp_compile_worker.py"), str(tmp_path), "2", timeout=600)
    greedy = [r.tokens for r in generate_tokens(tp_model(), PROMPTS[:1], max_new_tokens=10)]
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert result["greedy"] == greedy and result["auto"] is False


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["meta", "hf", "herd"])
def test_tp2_loads_its_slice_of_each_format(tmp_path, byte_bpe_path, fmt):
    """A Meta MP=2 checkpoint (each rank reads its own consolidated.0r.pth), HF and herd safetensors."""
    tok, directory = Tokenizer(byte_bpe_path), tmp_path / "model"
    if fmt == "meta":
        meta_format.write(tp_model(), tok, directory, mp=2)
    else:
        herd.save(tp_model(), tok, directory, format=fmt)
    torchrun(2, str(ROOT / "tests/model/tp_worker.py"), str(tmp_path), "2", str(directory))
    _check_ranks(tmp_path, 2)


@pytest.mark.slow
def test_cli_generate_and_chat_tp2_print_tp1_text(capsys, monkeypatch):
    from herd.cli import main

    prompt = ["--model", "tiny", "--max-new-tokens", "8"]
    main(["generate", *prompt, "--prompt", "The sky is"])
    generated = capsys.readouterr().out
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello\nWhat is 2+2?\n"))
    main(["chat", *prompt])
    chatted = capsys.readouterr().out
    assert generated.strip() and chatted.count("> ") == 2
    cli = ("-m", "herd.cli")
    assert torchrun(2, *cli, "generate", *prompt, "--prompt", "The sky is", "--tp", "2").stdout == generated
    assert torchrun(2, *cli, "chat", *prompt, "--tp", "2", stdin="Hello\nWhat is 2+2?\n").stdout == chatted


def test_cli_tp_without_torchrun_is_one_line_error():
    command = [sys.executable, "-m", "herd.cli", "generate", "--model", "tiny", "--prompt", "x", "--tp", "2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    assert result.returncode == 2
    expected = "herd: error: --tp 2 runs under torchrun: torchrun --nproc-per-node 2 -m herd.cli ... --tp 2\n"
    assert result.stderr == expected
