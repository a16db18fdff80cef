"""The Ray executor: the same pipeline on a local Ray instance of 2 workers gives byte-identical outputs and stats."""

import json
from pathlib import Path

import pytest

from herd.data import run_pipeline
from tests.data.test_data_pipeline import config, corpus
from tests.tiny import write_jsonl

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install ray)")


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance for the module: the executor joins it instead of starting its own."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def outputs(out: Path) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in out.glob("shard-*")}
    files["stats.json"] = (out / "stats.json").read_text().replace(str(out), "OUT").encode()
    files["report.md"] = (out / "report.md").read_bytes()
    return files


def test_ray_matches_local_executor(tmp_path, ray_instance):
    root = corpus(tmp_path, n_files=4, per_file=10)
    write_jsonl(root / "part4.jsonl", [{"text": " ".join(f"the word0x1y{j} and" for j in range(4)), "id": "dup"}])
    stages = ["normalize", {"gopher_quality": {"min_words": 8}}, "exact_dedup", "minhash_dedup"]
    local = run_pipeline(config(root, tmp_path / "local", stages=stages, workers=2, format="jsonl.zst"))
    on_ray = run_pipeline(config(root, tmp_path / "ray", stages=stages, workers=2, executor="ray", format="jsonl.zst"))
    assert [s.to_dict() for s in on_ray] == [s.to_dict() for s in local]
    assert on_ray[3].dropped == {"exact_duplicate": 1}
    assert outputs(tmp_path / "ray") == outputs(tmp_path / "local")
    assert (
        len(list((tmp_path / "ray" / "_run" / "done").iterdir())) == 3 * 5
    )  # three segments (two global stages) x five shards
    log = tmp_path / "ray" / "_run" / "stats"
    before = {p: p.stat().st_mtime_ns for p in log.iterdir()}
    run_pipeline(config(root, tmp_path / "ray", stages=stages, workers=2, executor="ray", format="jsonl.zst"))
    assert {p: p.stat().st_mtime_ns for p in log.iterdir()} == before  # all shards done: nothing re-ran
    assert json.loads((tmp_path / "ray" / "stats.json").read_text())["shards"] == 5


def test_one_shard_task_says_it_runs_in_process(tmp_path, ray_instance):
    """One small input file with tasks: 0 makes one task, which runs here, not on Ray: the run says so, and tasks: 2
    splits the file so Ray gets work."""
    root = corpus(tmp_path, n_files=1, per_file=10)
    with pytest.warns(UserWarning, match="executor: ray, but the input makes 1 shard task.*set tasks: N"):
        run_pipeline(config(root, tmp_path / "one", executor="ray", workers=2))
    run_pipeline(config(root, tmp_path / "split", executor="ray", workers=2, tasks=2))
    assert json.loads((tmp_path / "split" / "stats.json").read_text())["shards"] == 2
