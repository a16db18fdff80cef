"""Tensor-parallel launches that fail: every rank checks its launch, device and model before it joins the group, and
a rank that cannot load its slice stops the others, each rank with one line (herd.model.tensor_parallel)."""

import os
import subprocess
import sys

import pytest
import torch

import herd
from herd.errors import HerdError
from herd.model.tensor_parallel import init_tensor_parallel
from herd.tokenizer import Tokenizer
from herd.train.distributed import ParallelConfig, init_distributed
from tests.model.test_tp_inference import ROOT, tp_model


@pytest.fixture()
def joining(monkeypatch) -> list[str]:
    """A rank 0 of 2 under torchrun whose joining is recorded (the backends asked for) and refused, not done."""
    joined: list[str] = []

    def init_process_group(backend, **_kwargs):
        joined.append(backend)
        raise RuntimeError("joined the group")

    monkeypatch.setattr(torch.distributed, "init_process_group", init_process_group)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "2")):
        monkeypatch.setenv(name, value)
    return joined


@pytest.mark.parametrize("command", [["generate", "--prompt", "x"], ["chat"], ["eval", "--tasks", "mmlu"]])
@pytest.mark.parametrize("model, world, error", [
    ("/nonexistent/model", "2", "herd: error: model not found: /nonexistent/model is not a directory"),
    ("tiny", "3", "herd: error: tensor parallelism: the model's n_heads of 4 is not divisible by --tp 3"),
])
def test_each_rank_checks_the_model_before_joining(joining, monkeypatch, capsys, command, model, world, error):
    from herd.cli import main

    monkeypatch.setenv("WORLD_SIZE", world)
    with pytest.raises(SystemExit) as stopped:
        main([*command, "--model", model, "--tp", world])
    assert stopped.value.code == 2 and joining == []
    assert capsys.readouterr().err.startswith(error)


def test_a_rank_without_its_gpu_stops_before_joining(joining, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(HerdError, match="--device cuda: rank 0 needs GPU 1 but 1 are visible; use --device cpu"):
        init_tensor_parallel(2, "cuda")
    assert joining == []


def test_training_joins_with_the_backend_of_its_device(joining, monkeypatch):
    """init_distributed picks its backend by backend_for, as inference does: gloo for a CPU run on a GPU machine."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(RuntimeError, match="joined the group"):
        init_distributed(ParallelConfig(), "cpu")
    assert joining == ["gloo"]


def test_a_rank_that_cannot_load_stops_the_others_with_one_line(tmp_path, byte_bpe_path):
    """A NaN in rank 0's rows of the embedding: rank 0 refuses its slice, rank 1 loads its own and then stops too
    (it used to go on into generation's first all-reduce and die there with a traceback when rank 0 left)."""
    model = tp_model()
    with torch.no_grad():
        model.tok_embeddings.weight[3, 5] = float("nan")
    directory = herd.save(model, Tokenizer(byte_bpe_path), tmp_path / "model")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "herd.cli",
               "generate", "--model", str(directory), "--tp", "2", "--device", "cpu", "--prompt", "x"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env, cwd=ROOT, check=False)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith(("herd:", "[rank"))]
    assert len(lines) == 2, result.stderr[-4000:]
    assert any(line.startswith("herd: error: ") and "tok_embeddings.weight holds 1 NaN" in line for line in lines)
    assert "herd: error: tensor-parallel rank 0 failed loading the model (HerdError: " in result.stderr


RANK_DYING_IN_LOAD = """
import os, sys
from herd.errors import HerdError
from herd.model.tensor_parallel import all_ranks_or_none, init_tensor_parallel
tp = init_tensor_parallel(2, "cpu", timeout_s=60)
try:
    with all_ranks_or_none(tp, "loading the model"):
        if tp.rank == 1:
            os._exit(3)  # killed mid-load: no error to share
except HerdError as error:
    print(error)
"""


def test_a_rank_dying_while_loading_ends_the_other_with_one_line():
    """Without torchrun's agent to stop it (two processes on their own), the rank left waiting does not hang."""
    import socket

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = str(free.getsockname()[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "WORLD_SIZE": "2",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
    ranks = [subprocess.Popen([sys.executable, "-c", RANK_DYING_IN_LOAD], env={**env, "RANK": str(rank)}, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    out, err = ranks[0].communicate(timeout=120)
    assert ranks[1].wait(timeout=60) == 3
    assert out.startswith("tensor-parallel rank 0 lost the other ranks after loading the model (") and \
        out.count("\n") == 1, err[-3000:]
