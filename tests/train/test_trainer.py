"""The pretraining loop: config overrides, LR schedule, accumulation, resume (in-process and SIGKILL), faults, golden losses.

Regenerate the golden losses on purpose with `HERD_UPDATE_GOLDEN=1 pytest tests/train/test_trainer.py -k golden`.
"""

import importlib.util
import itertools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from herd.config_overrides import load_config, to_dict
from herd.errors import HerdError
from herd.model import ModelConfig, build_model, lazy_compile
from herd.train import fused_loss
from herd.train import pretrain as pretrain_mod
from herd.train.checkpointing import CheckpointManager
from herd.train.config import PretrainConfig
from herd.train.losses import next_token_loss, token_cross_entropy, token_losses
from herd.train.metrics import flops_per_token, read_records
from herd.train.packing import IGNORE_INDEX
from herd.train.pretrain import pretrain
from herd.train.schedule import grad_accum_at, learning_rate
from tests.tiny import TINY_MODEL, losses, tiny_config

GOLDEN = Path(__file__).parent / "golden" / "pretrain_tiny.json"


def fail_at(calls: set[int], make_bad):
    """A loss function that turns the loss of the given micro-batch calls (1-based) bad with make_bad(loss)."""
    count = {"n": 0}

    def loss_fn(model, batch):
        count["n"] += 1
        out = next_token_loss(model, batch)
        return out._replace(total=make_bad(out.total)) if count["n"] in calls else out

    return loss_fn


# --- config ------------------------------------------------------------------------------------------------
@dataclass
class Inner:
    """Doc."""

    rate: float = 0.1
    """Doc."""
    names: list[str] = field(default_factory=list)
    """Doc."""


@dataclass
class Outer:
    """Doc."""

    steps: int = 1
    """Doc."""
    flag: bool = False
    """Doc."""
    limit: int | None = 5
    """Doc."""
    table: dict[str, float] = field(default_factory=dict)
    """Doc."""
    inner: Inner = field(default_factory=Inner)
    """Doc."""


def test_config_file_plus_overrides(tmp_path):
    (tmp_path / "c.yaml").write_text("steps: 3\ninner:\n  rate: 0.5\ntable:\n  a: 1\n")
    config = load_config(
        Outer, tmp_path / "c.yaml",
        ["steps=1e3", "flag=true", "limit=none", "inner.names=[\"x\", \"y\"]", "table.b=2.5"],
    )
    assert config == Outer(steps=1000, flag=True, limit=None, table={"a": 1.0, "b": 2.5}, inner=Inner(0.5, ["x", "y"]))
    assert load_config(Outer, None, ["limit=7"]).limit == 7


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("stepz=3", "unknown config key 'stepz'; valid keys: steps, flag, limit, table, inner"),
        ("inner.rat=3", "unknown config key 'inner.rat'; valid keys in inner: rate, names"),
        ("steps=many", "config key 'steps' takes a int, got 'many'"),
        ("steps", "is not key=value"),
    ],
)
def test_config_errors_name_the_key(override, message):
    with pytest.raises(HerdError, match="^" + message.replace("[", r"\[") if override != "steps" else message):
        load_config(Outer, None, [override])


def test_pretrain_config_checks_combinations(shards, tmp_path):
    with pytest.raises(HerdError, match="optim.warmup_steps"):
        tiny_config(shards, tmp_path / "r", "optim.warmup_steps=20")
    with pytest.raises(HerdError, match="eval_interval"):
        tiny_config(shards, tmp_path / "r", "data.val_sources=null")
    with pytest.raises(HerdError, match="valid keys in model.fields: dim, n_layers"):
        tiny_config(shards, tmp_path / "r", "model.fields.dimm=3").model.resolve(512)


# --- schedule ----------------------------------------------------------------------------------------------
def test_lr_schedule_warmup_cosine_floor_anneal():
    lr = [learning_rate(s, peak=1.0, total=20, warmup=4, floor_ratio=0.1, anneal=4) for s in range(20)]
    assert lr[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lr[4] == 1.0 and all(a > b for a, b in itertools.pairwise(lr[4:16]))
    assert lr[16:] == pytest.approx([0.1, 0.075, 0.05, 0.025])  # floor reached at 16, then linear to 0
    no_anneal = [learning_rate(s, peak=1.0, total=10, warmup=0) for s in range(11)]
    assert no_anneal[0] == 1.0 and no_anneal[10] == pytest.approx(0.1)
    assert [grad_accum_at(s, 1, {3: 2, 6: 4}) for s in (0, 2, 3, 5, 6, 100)] == [1, 1, 2, 2, 4, 4]


def test_flops_per_token_counts_matmuls_and_attention():
    config = PretrainConfig().model.resolve(512)
    matmuls = config.num_params() - 512 * config.dim - (2 * config.n_layers + 1) * config.dim
    assert flops_per_token(config, 128) == 6 * matmuls + 12 * config.n_layers * config.dim * 128


# --- the chunked head + loss ------------------------------------------------------------------------------
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])  # compiled: as on CUDA
def test_linear_cross_entropy_equals_the_plain_head_and_loss(monkeypatch, compiled):
    monkeypatch.setitem(fused_loss.CHUNK_ELEMENTS, "cpu", 100 * 13)  # 13-row chunks (26 compiled): the last one short
    monkeypatch.setattr(fused_loss, "MIN_CHUNK_ROWS", 1)
    monkeypatch.setattr(fused_loss, "COMPILED_DEVICES", ("cpu",) if compiled else ())
    compiles = []
    monkeypatch.setattr(fused_loss, "compiled", lambda fn, **kw: compiles.append(fn) or lazy_compile.compiled(fn, **kw))
    torch.manual_seed(0)
    hidden = torch.randn(3, 50, 16, requires_grad=True)
    weight = torch.randn(100, 16, requires_grad=True)
    targets = torch.randint(0, 100, (3, 50))
    targets[0, :20] = IGNORE_INDEX
    got = fused_loss.linear_cross_entropy(hidden, weight, targets)
    (2 * got).backward()
    grads = hidden.grad, weight.grad
    hidden.grad = weight.grad = None
    plain = torch.nn.functional.cross_entropy(
        torch.nn.functional.linear(hidden, weight).flatten(0, 1), targets.flatten(), reduction="sum"
    )
    (2 * plain).backward()
    torch.testing.assert_close(got, plain, rtol=1e-6, atol=0)
    torch.testing.assert_close(grads[0], hidden.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[1], weight.grad, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(fused_loss.linear_cross_entropy(hidden, weight, targets), plain.detach())
    hidden.grad = weight.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):  # matmuls in bf16, softmax in fp32
        low = fused_loss.linear_cross_entropy(hidden, weight, targets)
    assert low.dtype == torch.float32 and low.item() == pytest.approx(plain.item(), rel=2e-2)
    low.backward()
    assert hidden.grad.dtype == weight.grad.dtype == torch.float32
    assert (weight.grad - grads[1] / 2).norm() < 2e-2 * weight.grad.norm()
    # the weight gradient sums its chunks in fp32 and is never rounded to bf16
    assert not torch.equal(weight.grad, weight.grad.bfloat16().float())
    again = fused_loss.linear_cross_entropy(hidden, weight, targets)
    again.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward pass per forward"):  # its gradients were scaled in place
        again.backward()
    assert bool(compiles) == compiled
    weight.grad = None
    fused_loss.linear_cross_entropy(hidden[:, :0], weight, targets[:, :0]).backward()  # no rows: zero gradient
    assert torch.equal(weight.grad, torch.zeros_like(weight))


def test_compiled_chunk_leaves_its_fp32_logits_alone():
    """fp32 logits reach the compiled chunk uncopied (`.float()` aliases them): writing them in place there made
    torch 2.11's inductor read the target logits after the shift, every loss off by its row's max."""
    logits, targets = torch.randn(26, 100), torch.randint(0, 100, (26,))
    before = logits.clone()
    eager = fused_loss._chunk_softmax(before.clone(), targets, 0, None, True)
    chunking = fused_loss._Chunking("cpu", torch.float32, rows=26, fused=True, group=None, start=0)
    got = chunking.softmax(logits, targets, True)  # the compiled path CUDA takes
    assert torch.equal(logits, before)
    torch.testing.assert_close(got[0], eager[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got[1], eager[1], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_token_losses_in_chunks_equal_the_whole_logits_gradients_included(monkeypatch, compiled):
    monkeypatch.setitem(fused_loss.CHUNK_ELEMENTS, "cpu", 100 * 13)  # 13-row chunks (26 compiled), the last one short
    monkeypatch.setattr(fused_loss, "MIN_CHUNK_ROWS", 1)
    monkeypatch.setattr(fused_loss, "COMPILED_DEVICES", ("cpu",) if compiled else ())
    hidden, weight = torch.randn(3, 50, 16, requires_grad=True), torch.randn(100, 16, requires_grad=True)
    targets = torch.randint(0, 100, (3, 50))
    targets[0, :20] = IGNORE_INDEX
    upstream = torch.randn(3, 50)  # a different weight per position, as DPO's sums give
    got = fused_loss.linear_token_losses(hidden, weight, targets)
    (got * upstream).sum().backward()  # the backward pass recomputes the chunks' logits
    grads = hidden.grad, weight.grad
    hidden.grad = weight.grad = None
    want = token_cross_entropy(torch.nn.functional.linear(hidden, weight), targets)
    (want * upstream).sum().backward()
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert got.shape == (3, 50) and torch.all(got[0, :20] == 0)
    torch.testing.assert_close(grads[0], hidden.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[1], weight.grad, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        assert not fused_loss.linear_token_losses(hidden, weight, targets).requires_grad
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the head in bf16, the softmax in fp32
        low = fused_loss.linear_token_losses(hidden, weight, targets)
    assert low.dtype == torch.float32 and torch.allclose(low, got, rtol=3e-2, atol=3e-2)


def test_next_token_loss_takes_the_chunked_path_with_the_same_gradients():
    model = build_model(ModelConfig(**TINY_MODEL, vocab_size=512))
    model.init_weights(0)
    tokens = torch.randint(0, 512, (2, 32))
    targets = tokens.roll(-1, 1)
    targets[:, -1] = IGNORE_INDEX
    doc_ids = (torch.arange(32) >= 20).long().expand(2, 32)
    batch = (tokens, targets, doc_ids)
    fused = next_token_loss(model, batch)
    fused.total.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    token_losses(model, batch).sum().backward()
    assert fused.count == 62 and fused.total.item() == pytest.approx(token_losses(model, batch).sum().item(), rel=1e-6)
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)


# --- the loop ------------------------------------------------------------------------------------------------
def test_run_writes_metrics_manifest_checkpoints_and_model(shards, tmp_path):
    config = tiny_config(shards, tmp_path / "run", "export_format=herd", "keep_last=2")
    result = pretrain(config)
    records = read_records(tmp_path / "run" / "metrics.jsonl")
    train = [r for r in records if "loss" in r]
    assert [r["step"] for r in train] == list(range(1, 13))
    assert {"grad_norm", "lr", "tokens_per_s", "tflops", "memory_gib"} <= set(train[0])
    assert train[-1]["lr"] == pytest.approx(3e-3 * 0.1 / 2)  # the last anneal step
    assert train[-1]["loss"] < train[0]["loss"] - 0.5
    val = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in val] == [6, 12]
    # byte-level tokens: bits per byte is the loss of the non-special targets over ln 2, close to val_loss / ln 2
    assert val[-1]["val_bpb"] == pytest.approx(val[-1]["val_loss"] / math.log(2), rel=0.15)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["steps"] == 12 and manifest["tokens"] == 12 * 4 * 32
    assert manifest["config"] == to_dict(config) and manifest["final_loss"] == train[-1]["loss"]
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints == ["latest", "step_00000008", "step_00000012"]
    assert result.final_val_bpb == val[-1]["val_bpb"] and result.steps == 12
    assert (tmp_path / "run" / "curves.png").is_file() == (importlib.util.find_spec("matplotlib") is not None)

    from herd.checkpoint import load

    model, _ = load(result.model_dir)
    state = CheckpointManager(tmp_path / "run" / "checkpoints").load()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state["model"].items())
    assert pretrain(config) == result  # a finished run is skipped


def test_grad_accum_is_token_mean_over_the_whole_step(shards, tmp_path):
    """batch 2 x accum 2 takes the same step as batch 4 (rows hold different numbers of targets)."""
    one = pretrain(tiny_config(shards, tmp_path / "one", "steps=2", "eval_interval=0", "optim.warmup_steps=0",
                               "optim.anneal_steps=0"))
    two = pretrain(tiny_config(shards, tmp_path / "two", "steps=2", "eval_interval=0", "optim.warmup_steps=0",
                               "optim.anneal_steps=0", "batch_size=2", "grad_accum=2"))
    assert losses(one.run_dir) == pytest.approx(losses(two.run_dir), rel=1e-6, abs=0)
    a = CheckpointManager(one.run_dir / "checkpoints").load()["model"]
    b = CheckpointManager(two.run_dir / "checkpoints").load()["model"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-5)  # Adam magnifies rounding where m ~ 0


def test_activation_checkpointing_keeps_losses_and_names(shards, tmp_path):
    plain = pretrain(tiny_config(shards, tmp_path / "plain", "steps=6", "eval_interval=0"))
    ac = pretrain(tiny_config(shards, tmp_path / "ac", "steps=6", "eval_interval=0", "activation_checkpointing=true"))
    assert losses(ac.run_dir) == losses(plain.run_dir)
    a = CheckpointManager(plain.run_dir / "checkpoints").load()["model"]
    assert set(CheckpointManager(ac.run_dir / "checkpoints").load()["model"]) == set(a)


def test_memory_check_fails_fast(shards, tmp_path):
    config = tiny_config(shards, tmp_path / "big", "model.preset=llama3-70b", "model.fields={}", "seq_len=64")
    start = time.perf_counter()
    with pytest.raises(HerdError, match=r"the run needs ~\d+.* GiB .*lower batch_size"):
        pretrain(config)
    assert time.perf_counter() - start < 5


# --- resume ------------------------------------------------------------------------------------------------
def test_resume_after_a_crash_is_bitwise_identical(shards, tmp_path, monkeypatch):
    reference = losses(pretrain(tiny_config(shards, tmp_path / "ref")).run_dir)

    def crash(loss):
        raise RuntimeError("simulated crash")

    with monkeypatch.context() as patch:
        patch.setattr(pretrain_mod, "next_token_loss", fail_at({7}, crash))
        with pytest.raises(RuntimeError, match="simulated crash"):
            pretrain(tiny_config(shards, tmp_path / "crashed"))
    assert len(losses(tmp_path / "crashed")) == 6  # steps 5 and 6 ran after the step-4 checkpoint
    result = pretrain(tiny_config(shards, tmp_path / "crashed"))
    assert result.resumed_from_step == 4
    assert losses(tmp_path / "crashed") == reference  # bitwise, with the records past step 4 replaced


def test_async_checkpoint_moves_latest_only_after_the_write(tmp_path, monkeypatch):
    from torch.distributed.checkpoint import FileSystemWriter
    from torch.distributed.checkpoint.api import CheckpointException

    model = build_model(ModelConfig(**TINY_MODEL, vocab_size=512))
    model.init_weights(0)
    optimizer = torch.optim.AdamW(model.parameters())
    manager = CheckpointManager(tmp_path, keep_last=2, async_save=True)
    manager.save(1, model, optimizer, {"step": 1}, {})
    manager.wait()
    assert manager.latest().name == "step_00000001"

    release, write = threading.Event(), FileSystemWriter.write_data
    monkeypatch.setattr(FileSystemWriter, "write_data", lambda self, *a: release.wait(30) and write(self, *a))
    saved = {name: value.clone() for name, value in model.state_dict().items()}
    manager.save(2, model, optimizer, {"step": 2}, {})
    with torch.no_grad():  # training goes on while the staged copy is written
        for param in model.parameters():
            param.add_(1.0)
    assert (tmp_path / ".tmp-step_00000002").is_dir()
    assert CheckpointManager(tmp_path).latest().name == "step_00000001"  # what a crash now would resume from
    release.set()
    manager.wait()
    assert manager.latest().name == "step_00000002"
    whole = CheckpointManager(tmp_path).load()
    assert whole["step"] == 2 and all(torch.equal(whole["model"][name], value) for name, value in saved.items())

    def failing(self, *args):
        raise OSError("disk full")

    monkeypatch.setattr(FileSystemWriter, "write_data", failing)
    manager.save(3, model, optimizer, {"step": 3}, {})
    with pytest.raises(CheckpointException, match="disk full"):
        manager.wait()
    assert manager.latest().name == "step_00000002"
    monkeypatch.setattr(FileSystemWriter, "write_data", write)
    manager.save(4, model, optimizer, {"step": 4}, {})
    manager.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_00000002", "step_00000004"]  # keep-last 2


def cut_in_half(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda d: cut_in_half(d / "__0_0.distcp"), r"__0_0\.distcp has [\d,]+ bytes, [\d,]+ when saved"),
        (lambda d: (d / ".metadata").write_bytes(b""), r"\.metadata has 0 bytes"),
        (lambda d: (d / "state.pt").unlink(), "no state.pt"),
        (lambda d: (d / "manifest.json").write_text("{"), "unreadable manifest.json"),
        (lambda d: shutil.rmtree(d), "missing"),
    ],
    ids=["truncated-shard", "empty-metadata", "no-state", "bad-manifest", "deleted"],
)
def test_a_damaged_latest_checkpoint_falls_back_to_the_intact_one_before(tmp_path, damage, problem):
    model = build_model(ModelConfig(**TINY_MODEL, vocab_size=512))
    model.init_weights(0)
    optimizer = torch.optim.AdamW(model.parameters())
    manager = CheckpointManager(tmp_path, keep_last=2)
    for step in (2, 4):
        manager.save(step, model, optimizer, {"step": step}, {})
    damage(tmp_path / "step_00000004")
    with pytest.warns(UserWarning, match=rf"step_00000004 \({problem}[^)]*\): resuming from .*step_00000002$"):
        assert manager.load_into(model, optimizer)["step"] == 2
    manager.save(3, model, optimizer, {"step": 3}, {})  # the run goes on from step 2: step 2 is kept, 4 left alone
    assert sorted(p.name for p in tmp_path.glob("step_*"))[:2] == ["step_00000002", "step_00000003"]
    assert manager.latest().name == "step_00000003"

    cut_in_half(tmp_path / "step_00000002" / "__0_0.distcp")
    cut_in_half(tmp_path / "step_00000003" / "__0_0.distcp")
    with pytest.raises(HerdError) as error:
        manager.latest()
    assert "\n" not in str(error.value)
    assert f"no intact checkpoint in {tmp_path}: {tmp_path / 'step_00000003'} (__0_0.distcp has" in str(error.value)


KILLED_MID_SAVE = """
import sys, time, torch
from torch.distributed.checkpoint import FileSystemWriter
from herd.model import ModelConfig, build_model
from herd.train.checkpointing import CheckpointManager
model = build_model(ModelConfig(**{fields}, vocab_size=512))
optimizer = torch.optim.AdamW(model.parameters())
manager = CheckpointManager(sys.argv[1], keep_last=2)
manager.save(2, model, optimizer, {{"step": 2}}, {{}})
write = FileSystemWriter.write_data
def write_then_hang(self, *args):
    write(self, *args).wait()  # the shards are written, the commit never comes
    print("written", flush=True)
    time.sleep(60)
FileSystemWriter.write_data = write_then_hang
manager.save(4, model, optimizer, {{"step": 4}}, {{}})
"""


def test_sigkill_mid_save_leaves_the_checkpoint_before_intact(tmp_path):
    script = KILLED_MID_SAVE.format(fields=TINY_MODEL)
    process = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "written\n"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (tmp_path / ".tmp-step_00000004" / "__0_0.distcp").is_file()
    manager = CheckpointManager(tmp_path, keep_last=2)
    model = build_model(ModelConfig(**TINY_MODEL, vocab_size=512))
    optimizer = torch.optim.AdamW(model.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing damaged: no warning
        assert manager.load_into(model, optimizer)["step"] == 2
    manager.save(3, model, optimizer, {"step": 3}, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_00000002", "step_00000003"]


def test_resume_from_before_a_truncated_checkpoint_is_bitwise_identical(shards, tmp_path):
    short = ("steps=8", "checkpoint_interval=2", "eval_interval=0")
    reference = losses(pretrain(tiny_config(shards, tmp_path / "ref", *short)).run_dir)
    run = pretrain(tiny_config(shards, tmp_path / "run", *short, "steps=6")).run_dir
    cut_in_half(run / "checkpoints" / "step_00000006" / "__0_0.distcp")
    with pytest.warns(UserWarning, match=r"step_00000006 \(__0_0\.distcp has .*resuming from .*step_00000004"):
        result = pretrain(tiny_config(shards, tmp_path / "run", *short, "resume=true"))
    assert result.resumed_from_step == 4
    assert losses(run) == reference  # step 4's weights, optimizer, data position and RNG


def test_cli_says_in_one_line_that_no_checkpoint_is_intact(shards, tmp_path, capsys):
    from herd.cli import main

    run = pretrain(tiny_config(shards, tmp_path / "run", "steps=6", "checkpoint_interval=2", "eval_interval=0")).run_dir
    for step in (4, 6):
        cut_in_half(run / "checkpoints" / f"step_{step:08d}" / "__0_0.distcp")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["pretrain", "--config", str(tmp_path / "run.json"), "steps=8", "resume=true"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"herd: error: no intact checkpoint in {run / 'checkpoints'}: ")


def test_async_checkpoint_run_equals_the_synchronous_run(shards, tmp_path):
    short = ("steps=6", "checkpoint_interval=2", "eval_interval=0")
    sync = pretrain(tiny_config(shards, tmp_path / "sync", *short))
    background = pretrain(tiny_config(shards, tmp_path / "async", *short, "async_checkpoint=true"))
    assert losses(background.run_dir) == losses(sync.run_dir)
    a = CheckpointManager(sync.run_dir / "checkpoints").load()
    b = CheckpointManager(background.run_dir / "checkpoints").load()
    assert b["loop"]["batches"] == a["loop"]["batches"] and all(torch.equal(b["model"][k], v) for k, v in a["model"].items())


SUBPROCESS_RUN = """
import json, sys
from herd.config_overrides import load_config
from herd.train.config import PretrainConfig
from herd.train.pretrain import pretrain
pretrain(load_config(PretrainConfig, sys.argv[1], sys.argv[2:]))
"""


@pytest.mark.slow
def test_sigkill_mid_run_then_same_command_resumes_bitwise(shards, tmp_path):
    overrides = ["steps=24", "checkpoint_interval=4", "eval_interval=0", "seq_len=64"]
    reference = losses(pretrain(tiny_config(shards, tmp_path / "ref", *overrides)).run_dir)
    tiny_config(shards, tmp_path / "killed", *overrides)  # writes killed.json
    command = [sys.executable, "-c", SUBPROCESS_RUN, str(tmp_path / "killed.json"), *overrides]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.monotonic() + 60
    while len(losses(tmp_path / "killed")) < 10 if metrics.exists() else True:
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert len(losses(tmp_path / "killed")) < 24
    finished = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert json.loads((tmp_path / "killed" / "manifest.json").read_text())["resumed_from_step"] >= 8
    assert losses(tmp_path / "killed") == reference


# --- faults ------------------------------------------------------------------------------------------------
def test_nan_skip_drops_the_batch(shards, tmp_path, monkeypatch):
    monkeypatch.setattr(pretrain_mod, "next_token_loss", fail_at({5}, lambda loss: loss * math.nan))
    result = pretrain(tiny_config(shards, tmp_path / "skip", "eval_interval=0"))
    records = read_records(result.run_dir / "metrics.jsonl")
    bad = [r for r in records if r.get("event")]
    assert [(r["step"], r["event"]) for r in bad] == [(5, "nan")]
    assert len(records) == 13 and result.steps == 12  # 12 good steps, one dropped batch
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["skipped_steps"] == 1 and manifest["rollbacks"] == 0
    state = CheckpointManager(result.run_dir / "checkpoints").load()
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    assert state["loop"]["batches"] == 13


def test_nan_rollback_reloads_the_checkpoint_and_skips_the_data(shards, tmp_path, monkeypatch):
    reference = read_records(pretrain(tiny_config(shards, tmp_path / "ref", "eval_interval=0")).run_dir / "metrics.jsonl")
    monkeypatch.setattr(pretrain_mod, "next_token_loss", fail_at({7}, lambda loss: loss * math.inf))
    result = pretrain(tiny_config(shards, tmp_path / "rb", "eval_interval=0", "faults.policy=rollback"))
    records = read_records(result.run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6, 7, 5, 6, 7, 8, 9, 10, 11, 12]
    assert records[6]["event"] == "nan"
    assert [r["loss"] for r in records[:6]] == [r["loss"] for r in reference[:6]]
    # back at step 5 with the weights of step 4, but on the rows after the bad batch (data 8 onwards)
    assert records[7]["loss"] != reference[4]["loss"] and records[7]["lr"] == reference[4]["lr"]
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["rollbacks"] == 1 and manifest["steps"] == 12
    assert CheckpointManager(result.run_dir / "checkpoints").load()["loop"]["batches"] == 15


def test_loss_spike_is_detected_and_skipped(shards, tmp_path, monkeypatch):
    monkeypatch.setattr(pretrain_mod, "next_token_loss", fail_at({9}, lambda loss: loss * 10))
    result = pretrain(tiny_config(shards, tmp_path / "spike", "eval_interval=0", "faults.spike_factor=3",
                                  "faults.spike_warmup=3"))
    events = [(r["step"], r["event"]) for r in read_records(result.run_dir / "metrics.jsonl") if r.get("event")]
    assert events == [(9, "spike")] and result.steps == 12


def test_stop_policy_and_too_many_bad_steps_end_the_run(shards, tmp_path, monkeypatch):
    monkeypatch.setattr(pretrain_mod, "next_token_loss", fail_at(set(range(3, 100)), lambda loss: loss * math.nan))
    with pytest.raises(HerdError, match="faults.policy=stop"):
        pretrain(tiny_config(shards, tmp_path / "stop", "eval_interval=0", "faults.policy=stop"))
    with pytest.raises(HerdError, match="3th bad step in a row"):
        pretrain(tiny_config(shards, tmp_path / "many", "eval_interval=0", "faults.max_bad_steps=2"))


# --- sequence-length / batch-size stages -----------------------------------------------------------------------
STAGES = 'stages=[{"step": 0, "seq_len": 16, "batch_tokens": 256}, {"step": 6, "seq_len": 32, "batch_tokens": 512}]'


def test_stages_change_row_length_and_batch_and_resume_bitwise(shards, tmp_path, monkeypatch):
    reference = pretrain(tiny_config(shards, tmp_path / "ref", STAGES, "eval_interval=0"))
    records = read_records(reference.run_dir / "metrics.jsonl")
    # micro-batches of 4 x 32 tokens: 2 per step at 256 tokens, then 4 at 512
    assert [r["tokens"] for r in records] == [256 * s for s in range(1, 7)] + [1536 + 512 * s for s in range(1, 7)]
    plain = losses(pretrain(tiny_config(shards, tmp_path / "plain", "eval_interval=0", "grad_accum=2")).run_dir)
    assert losses(reference.run_dir)[0] != plain[0]  # the same rows, cut in two: another loss

    def crash(loss):
        raise RuntimeError("simulated crash")

    with monkeypatch.context() as patch:  # micro-batch 17 is step 8's first (steps 1-6 take 2, step 7 takes 4)
        patch.setattr(pretrain_mod, "next_token_loss", fail_at({17}, crash))
        with pytest.raises(RuntimeError, match="simulated crash"):
            pretrain(tiny_config(shards, tmp_path / "crashed", STAGES, "eval_interval=0", "checkpoint_interval=5"))
    result = pretrain(tiny_config(shards, tmp_path / "crashed", STAGES, "eval_interval=0", "checkpoint_interval=5"))
    assert result.resumed_from_step == 5
    assert losses(tmp_path / "crashed") == losses(reference.run_dir)


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ('[{"step": 0, "seq_len": 12, "batch_tokens": 256}]', r"stages\[0\].seq_len=12 must divide seq_len=32"),
        ('[{"step": 0, "seq_len": 16, "batch_tokens": 200}]', "must be a multiple of batch_size x seq_len = 128"),
        ('[{"step": 3, "seq_len": 16, "batch_tokens": 256}]', "must start at step 0"),
    ],
)
def test_stage_errors_name_the_stage(shards, tmp_path, stages, message):
    with pytest.raises(HerdError, match=message):
        tiny_config(shards, tmp_path / "r", f"stages={stages}")
    with pytest.raises(HerdError, match="leave grad_accum=1"):
        tiny_config(shards, tmp_path / "r", STAGES, "grad_accum=2")


# --- golden losses -----------------------------------------------------------------------------------------
def test_golden_loss_curve(shards, tmp_path):
    """A fixed tiny fp32 CPU run; regenerate on purpose with HERD_UPDATE_GOLDEN=1."""
    config = tiny_config(shards, tmp_path / "golden", "steps=20", "eval_interval=0", "checkpoint_interval=0",
                         "grad_accum_schedule={\"10\": 2}")
    got = losses(pretrain(config).run_dir)
    if os.environ.get("HERD_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps({"config": "tests/train/test_trainer.py::test_golden_loss_curve", "losses": got}, indent=1))
    expected = json.loads(GOLDEN.read_text())["losses"]
    assert got == pytest.approx(expected, rel=1e-5, abs=0)

