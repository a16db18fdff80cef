"""3-D parallelism on CPU (gloo, under torchrun): each layout reproduces the single-process loss curve, DCP
checkpoints (written async) reload on another world size, the final model exports whole, a hung collective ends every rank.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from herd.errors import HerdError
from herd.train.distributed import PIPELINE_MIN_TORCH, ParallelConfig, clip_scale
from herd.train.metrics import read_records
from herd.train.optimizer import step_scaled
from herd.train.pretrain import pretrain
from tests.tiny import TINY_MODEL, losses, tiny_config
from tests.train.test_trainer import STAGES

COMMON = ("steps=10", "eval_interval=5", "checkpoint_interval=5", "grad_accum=2")
GLOBAL_ROWS = 4  # rows per micro-batch over all data-parallel ranks
TOLERANCE = 1e-4


def torchrun(nproc: int, config_json: Path, *overrides: str, program: tuple[str, ...] = ("-m", "herd.cli", "pretrain"),
             ok: bool = True) -> subprocess.CompletedProcess:
    """`herd pretrain` (or `program`, given --config C key=value ...) under torchrun with `nproc` CPU ranks (gloo)."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        *program,
        "--config",
        str(config_json),
        *overrides,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, check=False)
    if ok:
        assert result.returncode == 0, result.stderr[-6000:]
    return result


def run_layout(shards, out: Path, dp: int, tp: int, pp: int, *extra: str) -> list[float]:
    overrides = [
        *COMMON,
        f"batch_size={GLOBAL_ROWS // dp}",
        f"parallel.dp_shard={dp}",
        f"parallel.tp={tp}",
        f"parallel.pp={pp}",
        *extra,
    ]
    tiny_config(shards, out, *overrides)  # writes out.json
    torchrun(dp * tp * pp, out.parent / f"{out.name}.json", *overrides)
    return losses(out)


def max_relative_difference(got: list[float], expected: list[float]) -> float:
    assert len(got) == len(expected)
    return max(abs(a - b) / abs(b) for a, b in zip(got, expected))


def validation(run_dir: Path) -> list[float]:
    """The run's validation losses and bits-per-byte (steps 5 and 10)."""
    records = [r for r in read_records(Path(run_dir) / "metrics.jsonl") if "val_loss" in r]
    assert [r["step"] for r in records] == [5, 10]
    return [r[key] for r in records for key in ("val_loss", "val_bpb")]


@pytest.fixture(scope="module")
def reference(shards, tmp_path_factory):
    """The single-process run every layout must reproduce (exported, to compare the final weights)."""
    out = tmp_path_factory.mktemp("single") / "run"
    return pretrain(tiny_config(shards, out, *COMMON, f"batch_size={GLOBAL_ROWS}", "export_format=herd"))


PIPELINE = pytest.mark.skipif(torch.__version__ < PIPELINE_MIN_TORCH,
                              reason=f"pipeline parallelism needs torch >= {PIPELINE_MIN_TORCH}")


@PIPELINE
def test_parallel_config_names_the_options_to_fix():
    assert ParallelConfig(tp=2).degrees(8) == (1, 4, 2)
    with pytest.raises(HerdError, match=r"parallel.dp_shard=2 x parallel.tp=2 x parallel.pp=1 must equal the 2 rank"):
        ParallelConfig(dp_shard=2, tp=2).degrees(2)
    with pytest.raises(HerdError, match="parallel.pp"):
        ParallelConfig(pp=0)
    with pytest.raises(HerdError, match="runs 2 or more stage.* parallel.pp_stages_per_rank=1"):
        ParallelConfig(pp=2, pp_schedule="Interleaved1F1B")
    with pytest.raises(HerdError, match="runs 1 stage.* parallel.pp_stages_per_rank=2"):
        ParallelConfig(pp=2, pp_stages_per_rank=2)
    interleaved = ParallelConfig(pp=2, pp_schedule="Interleaved1F1B", pp_stages_per_rank=2)
    interleaved.check_micro_batches([1, 2, 3, 4, 6])
    with pytest.raises(HerdError, match="divisible by max.* = 2, got 5"):
        interleaved.check_micro_batches([4, 5])
    with pytest.raises(HerdError, match="1F1B needs micro-batches .* >= parallel.pp=2, got 1"):
        ParallelConfig(pp=2).check_micro_batches([2, 1])


@PIPELINE
def test_pipeline_stages_run_slices_of_the_models_own_forward():
    """Stages are Transformers over a slice of the model's blocks: chained, they give the model's logits exactly."""
    from herd.model import ModelConfig, Transformer, build_model
    from herd.train.pipeline import StageModule, stage_layers

    model = build_model(ModelConfig(**TINY_MODEL, vocab_size=512))
    model.init_weights(0)
    tokens = torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(0))
    doc_ids = (torch.arange(24) >= 10).long().expand(2, 24)
    stages = [StageModule(model, stage_layers(model.config.n_layers, 2, stage)) for stage in range(2)]
    assert all(isinstance(stage, Transformer) for stage in stages)
    with torch.no_grad():
        assert torch.equal(stages[1](stages[0](tokens, doc_ids), doc_ids), model(tokens, doc_ids=doc_ids))


def test_pipeline_parallelism_names_the_torch_it_needs(monkeypatch):
    monkeypatch.setattr(torch, "__version__", torch.torch_version.TorchVersion("2.9.1+cu128"))
    with pytest.raises(HerdError, match=r"parallel.pp=2 needs torch >= 2.11 \(this is 2.9.1\+cu128\)"):
        ParallelConfig(pp=2)
    ParallelConfig(tp=2)  # the other layouts run on it


def test_data_parallel_reproduces_the_curve_and_resumes_on_one_rank(shards, reference, tmp_path):
    got = run_layout(
        shards, tmp_path / "dp", 2, 1, 1, "export_format=herd", "faults.sdc_interval=3", "async_checkpoint=true"
    )
    expected = losses(reference.run_dir)
    print(f"dp=2 max relative loss difference: {max_relative_difference(got, expected):.2e}")
    assert max_relative_difference(got, expected) < TOLERANCE

    from herd.checkpoint import load

    dp_model, _ = load(tmp_path / "dp" / "model")
    single_model, _ = load(reference.model_dir)
    for name, value in single_model.state_dict().items():
        torch.testing.assert_close(dp_model.state_dict()[name], value, rtol=1e-4, atol=1e-5)

    # the dp=2 checkpoint of step 5, resumed by one process, continues the same curve
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "dp", resumed)
    shutil.rmtree(resumed / "checkpoints" / "step_00000010")
    (resumed / "checkpoints" / "latest").write_text("step_00000005")
    (resumed / "manifest.json").unlink()
    result = pretrain(tiny_config(shards, resumed, *COMMON, f"batch_size={GLOBAL_ROWS}"))
    assert result.resumed_from_step == 5
    after = losses(resumed)
    print(f"dp=2 -> dp=1 resume max relative loss difference: {max_relative_difference(after, expected):.2e}")
    assert max_relative_difference(after, expected) < TOLERANCE


@pytest.mark.parametrize(
    ("dp", "tp", "pp", "extra"),
    [
        (1, 2, 1, ()),  # sequence parallel (the default)
        pytest.param(1, 1, 2, (), marks=PIPELINE),  # 1F1B, two micro-batches
        pytest.param(2, 2, 1, ("parallel.sequence_parallel=false",), marks=pytest.mark.slow),
        pytest.param(2, 1, 2, ("activation_checkpointing=true",), marks=[pytest.mark.slow, PIPELINE]),
        pytest.param(2, 2, 2, (), marks=[pytest.mark.slow, PIPELINE]),  # 8 ranks
    ],
    ids=["tp2", "pp2", "dp2xtp2", "dp2xpp2", "dp2xtp2xpp2"],
)
def test_layout_reproduces_the_single_process_curve(shards, reference, tmp_path, dp, tp, pp, extra):
    got = run_layout(shards, tmp_path / "run", dp, tp, pp, *extra)
    difference = max_relative_difference(got, losses(reference.run_dir))
    print(f"dp={dp} tp={tp} pp={pp} {' '.join(extra)} max relative loss difference: {difference:.2e}")
    assert difference < TOLERANCE
    assert max_relative_difference(validation(tmp_path / "run"), validation(reference.run_dir)) < TOLERANCE


INIT_RANK = textwrap.dedent("""
    import json, os, sys
    import torch
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from herd.model import ModelConfig, build_model
    from herd.train.distributed import ParallelConfig, init_distributed
    from herd.train.parallelize import parallelize
    from herd.train.pipeline import split_stage
    from herd.train.pretrain import init_weights

    config, (dp, tp, pp) = ModelConfig(**json.loads(sys.argv[2])), map(int, sys.argv[3:6])
    distributed = init_distributed(ParallelConfig(dp_shard=dp, tp=tp, pp=pp), "cpu")
    model = build_model(config, device="meta")
    if pp > 1:
        model = split_stage(model, distributed)
    parallelize(model, distributed, activation_checkpointing=False, compile=False)
    model.to_empty(device="cpu")
    init_weights(model, config, 7, distributed)
    whole = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    torch.save(whole, os.path.join(sys.argv[1], f"rank{os.environ['RANK']}.pt"))
    distributed.close()
""")


FOUR_LAYERS = "model.fields.n_layers=4"  # two stages on each of two pipeline ranks


@pytest.fixture(scope="module")
def reference_four_layers(shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("single4") / "run"
    return pretrain(tiny_config(shards, out, *COMMON, f"batch_size={GLOBAL_ROWS}", FOUR_LAYERS, "export_format=herd"))


@pytest.mark.parametrize(
    ("dp", "schedule"),
    [(1, "Interleaved1F1B"), pytest.param(1, "LoopedBFS", marks=pytest.mark.slow),
     pytest.param(2, "Interleaved1F1B", marks=pytest.mark.slow)],
    ids=["pp2-interleaved", "pp2-looped-bfs", "dp2xpp2-interleaved"],
)
@PIPELINE
def test_multi_stage_schedules_reproduce_the_single_process_curve(shards, reference_four_layers, tmp_path, dp, schedule):
    run = tmp_path / "run"
    got = run_layout(shards, run, dp, 1, 2, FOUR_LAYERS, f"parallel.pp_schedule={schedule}",
                     "parallel.pp_stages_per_rank=2", "export_format=herd")
    expected = reference_four_layers.run_dir
    print(f"dp={dp} pp=2x2 {schedule} max relative loss difference: {max_relative_difference(got, losses(expected)):.2e}")
    assert max_relative_difference(got, losses(expected)) < TOLERANCE
    assert max_relative_difference(validation(run), validation(expected)) < TOLERANCE

    from herd.checkpoint import load

    exported, _ = load(run / "model")  # every rank's stages, under the single-process names
    for name, value in load(reference_four_layers.model_dir)[0].state_dict().items():
        torch.testing.assert_close(exported.state_dict()[name], value, rtol=1e-4, atol=1e-5)


@PIPELINE
def test_sequence_length_stages_run_under_pipeline_parallelism(shards, tmp_path):
    common = ("steps=10", "eval_interval=5", "checkpoint_interval=5", STAGES)  # 2 micro-batches a step, then 4
    expected = losses(pretrain(tiny_config(shards, tmp_path / "single", *common, f"batch_size={GLOBAL_ROWS}")).run_dir)
    overrides = [*common, f"batch_size={GLOBAL_ROWS}", "parallel.pp=2"]
    tiny_config(shards, tmp_path / "pp", *overrides)
    torchrun(2, tmp_path / "pp.json", *overrides)
    got = losses(tmp_path / "pp")
    print(f"pp=2 with sequence-length stages: max relative loss difference {max_relative_difference(got, expected):.2e}")
    assert max_relative_difference(got, expected) < TOLERANCE


@pytest.mark.parametrize(
    ("dp", "tp", "pp"), [(2, 1, 1), (1, 2, 1), pytest.param(1, 1, 2, marks=[pytest.mark.slow, PIPELINE])],
    ids=["dp2", "tp2", "pp2"],
)
def test_sharded_init_equals_the_single_process_init(tmp_path, dp, tp, pp):
    from herd.model import ModelConfig, build_model

    script = tmp_path / "init.py"
    script.write_text(INIT_RANK)
    fields = {**TINY_MODEL, "vocab_size": 512}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={dp * tp * pp}",
               str(script), str(tmp_path), json.dumps(fields), str(dp), str(tp), str(pp)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert result.returncode == 0, result.stderr[-6000:]
    got = {}
    for rank in range(dp * tp * pp):
        got.update(torch.load(tmp_path / f"rank{rank}.pt", weights_only=True))
    expected = build_model(ModelConfig(**fields))
    expected.init_weights(7)
    assert set(got) == set(expected.state_dict())
    for name, value in expected.state_dict().items():
        assert torch.equal(got[name], value), name


@pytest.mark.parametrize("numel", [16, 1000, 1001, 4099])
def test_skipping_a_parameter_advances_the_generator_like_drawing_it(monkeypatch, numel):
    from herd.train import weight_init

    monkeypatch.setattr(weight_init, "CHUNK", 64)
    drawn, skipped = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    torch.randn(numel, generator=drawn)
    weight_init.skip_normal(skipped, numel)
    assert torch.equal(torch.randn(40, generator=skipped), torch.randn(40, generator=drawn))


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "foreach"])
def test_optimizer_steps_on_the_clipped_and_divided_gradients(fused):
    param = torch.nn.Parameter(torch.zeros(2))
    param.grad = torch.tensor([30.0, 40.0])  # norm 50: divided by 10 to 5, clipped to 1
    groups = [[param]]
    norm, scale = clip_scale(groups, 1.0, None, divide_by=10.0)
    assert norm.item() == pytest.approx(5.0) and scale.item() == pytest.approx(0.02)
    optimizer = torch.optim.SGD([param], lr=1.0, fused=fused, foreach=not fused)  # plain SGD: the update is the grad
    step_scaled(optimizer, groups, scale)
    torch.testing.assert_close(param.detach(), torch.tensor([-0.6, -0.8]))
    assert not hasattr(optimizer, "grad_scale")


FLAKY_RANK = textwrap.dedent("""
    import os, sys
    from herd.config_overrides import load_config
    from herd.train import pretrain as pretrain_mod
    from herd.train.config import PretrainConfig
    from herd.train.losses import next_token_loss

    calls = 0

    def flaky(model, batch):  # rank 1 recomputes step 3's first micro-batch (its 7th) a hair differently
        global calls
        calls += 1
        out = next_token_loss(model, batch)
        return out._replace(total=out.total * (1 + 1e-6)) if os.environ["RANK"] == "1" and calls == 7 else out

    pretrain_mod.next_token_loss = flaky
    pretrain_mod.pretrain(load_config(PretrainConfig, sys.argv[2], sys.argv[3:]))
""")


def test_silent_data_corruption_on_one_replica_is_reported_with_its_rank(shards, tmp_path):
    script = tmp_path / "flaky.py"
    script.write_text(FLAKY_RANK)
    overrides = [*COMMON, "batch_size=2", "parallel.dp_shard=2", "faults.sdc_interval=3"]
    tiny_config(shards, tmp_path / "sdc", *overrides)
    result = torchrun(2, tmp_path / "sdc.json", *overrides, program=(str(script),), ok=False)
    assert result.returncode != 0
    assert "silent data corruption: step 3 recomputed to another loss on rank(s) [1]" in result.stderr
    assert len(losses(tmp_path / "sdc")) == 2  # steps 1 and 2 ran; step 3 was never applied


HUNG_RANK = textwrap.dedent("""
    import os, time
    import torch, torch.distributed as dist
    from herd.train.distributed import hang_watchdog
    dist.init_process_group("gloo")
    with hang_watchdog(2.0):
        if dist.get_rank() == 0:
            dist.all_reduce(torch.ones(1))  # rank 1 never joins
        else:
            time.sleep(60)
""")


def test_hang_dumps_every_ranks_stacks_and_exits_nonzero(tmp_path):
    script = tmp_path / "hang.py"
    script.write_text(HUNG_RANK)
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    ranks = [
        subprocess.Popen([sys.executable, str(script)], env={**env, "RANK": str(r)}, stderr=subprocess.PIPE, text=True)
        for r in range(2)
    ]
    for rank in ranks:
        _, stderr = rank.communicate(timeout=60)
        assert rank.returncode == 1
        assert "Timeout" in stderr and "hang.py" in stderr  # faulthandler's dump names the stuck line


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


VOCAB_PARALLEL_RANK = textwrap.dedent("""
    import sys
    import torch, torch.distributed as dist, torch.nn.functional as F
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor
    from herd.train import fused_loss
    from herd.train.fused_loss import linear_cross_entropy
    fused_loss.CHUNK_ELEMENTS["cpu"] = 1  # chunks of MIN_CHUNK_ROWS (256) rows: three here
    fused_loss.COMPILED_DEVICES = ("cpu",) if sys.argv[1] == "compiled" else ()  # compiled: as on CUDA
    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (2,), mesh_dim_names=("tp",))
    generator = torch.Generator().manual_seed(0)  # the same tensors on both ranks
    hidden = torch.randn(700, 16, generator=generator)
    weight = torch.randn(129, 16, generator=generator)  # an odd vocabulary: 65 + 64 rows
    targets = torch.randint(0, 129, (700,), generator=generator)
    targets[::7] = -100  # IGNORE_INDEX
    expected_hidden, expected_weight = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    expected = F.cross_entropy(expected_hidden @ expected_weight.T, targets, reduction="sum")
    expected.backward()
    hidden.requires_grad_()
    sharded = distribute_tensor(weight, mesh, [Shard(0)]).requires_grad_()
    loss = linear_cross_entropy(hidden, sharded, targets)
    loss.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(hidden.grad, expected_hidden.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(sharded.grad.full_tensor(), expected_weight.grad, rtol=1e-4, atol=1e-5)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert graphs == (2 if fused_loss.COMPILED_DEVICES else 0), graphs  # a full chunk and the short last one
    print(f"rank {dist.get_rank()} ok", flush=True)
    dist.destroy_process_group()
""")


@pytest.mark.parametrize("chunks", ["eager", "compiled"])
def test_vocab_parallel_loss_equals_the_whole_logits_loss(tmp_path, chunks):
    """The chunked loss on a head split by vocabulary rows over two ranks (uneven shards, ignored targets, several
    chunks; compiled, with the all-reduces in the graph): the loss and gradients of the whole logits, on every rank."""
    script = tmp_path / "vocab_parallel.py"
    script.write_text(VOCAB_PARALLEL_RANK)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), chunks]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "rank 0 ok" in result.stdout and "rank 1 ok" in result.stdout
