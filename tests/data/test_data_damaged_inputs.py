"""Damaged inputs: a cut or corrupt .jsonl.zst / .jsonl.gz / .jsonl / .parquet keeps every record before the damage,
counts the damage once with its file, line and byte, and fails the run unless `allow_damaged_inputs` is set."""

import gzip
import io
import json
import random
import warnings
import zlib
from pathlib import Path

import pytest

from herd.cli import main
from herd.data import InputConfig, OutputConfig, PipelineConfig, read_documents, run_pipeline
from herd.data.readers import input_files, read_texts
from herd.errors import HerdError

zstandard = pytest.importorskip("zstandard")
pytestmark = pytest.mark.filterwarnings("ignore:.*damaged input file.*accepted:UserWarning")

RNG = random.Random(0)
RECORDS = [{"id": f"d{i}", "text": " ".join(f"w{RNG.randrange(10**6)}" for _ in range(20))} for i in range(5000)]
JSONL = "".join(json.dumps(r) + "\n" for r in RECORDS).encode()
HEAD = b"".join(JSONL.splitlines(keepends=True)[:30])  # an intact file of 30 records
COMPRESS = {
    ".jsonl.zst": lambda data: zstandard.ZstdCompressor().compress(data),
    ".jsonl.gz": lambda data: gzip.compress(data, mtime=0),
}


def recoverable_lines(suffix: str, data: bytes) -> int:
    """Complete lines a streaming decoder gets out of `data` before it breaks off (independent of herd's reader)."""
    decoder = zstandard.ZstdDecompressor().decompressobj() if suffix.endswith(".zst") else zlib.decompressobj(31)
    return decoder.decompress(data).count(b"\n")


def write(root: Path, name: str, data: bytes) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(data)
    return root / name


def config(inputs: Path, out: Path, **kwargs) -> PipelineConfig:
    return PipelineConfig(
        input=InputConfig(paths=[str(inputs)]),
        output=OutputConfig(dir=str(out), format="jsonl"),
        stages=["normalize"],
        count_tokens=False,
        **kwargs,
    )


def outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def damage(out: Path) -> list[dict]:
    return json.loads((out / "stats.json").read_text())["stages"][0].get("damaged", [])


@pytest.mark.parametrize("suffix", list(COMPRESS))
def test_truncated_compressed_file_keeps_what_a_decoder_recovers(tmp_path, suffix):
    compressed = COMPRESS[suffix](JSONL)
    cut = compressed[: len(compressed) * 6 // 10]
    src = write(tmp_path / "in", f"a{suffix}", cut)
    expected = recoverable_lines(suffix, cut)
    assert 0 < expected < len(RECORDS)

    with pytest.raises(HerdError, match="allow_damaged_inputs: true") as error:
        run_pipeline(config(src.parent, tmp_path / "out"))
    assert str(src) in str(error.value) and "\n" not in str(error.value)
    kept = [d.id for d in read_documents([tmp_path / "out"])]
    assert kept == [r["id"] for r in RECORDS[:expected]]  # every record before the damage, nothing after
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    read = stats["stages"][0]
    assert read["dropped"] == {"truncated_file": 1}  # the cut last line is part of the damage, not invalid_json
    [entry] = read["damaged"]
    assert (entry["file"], entry["reason"], entry["line"], entry["offset"]) == (
        str(src), "truncated_file", expected + 1, len(cut)
    )
    assert str(src) in (tmp_path / "out" / "report.md").read_text()

    before = outputs(tmp_path / "out")  # a re-run that accepts the damage resumes: nothing redone, same files
    stats = run_pipeline(config(src.parent, tmp_path / "out", allow_damaged_inputs=True))
    assert stats[0].damaged == read["damaged"] and outputs(tmp_path / "out") == before


def test_the_cli_exits_2_on_damage_unless_allowed(tmp_path, capsys):
    compressed = COMPRESS[".jsonl.gz"](JSONL)
    src = write(tmp_path / "in", "a.jsonl.gz", compressed[: len(compressed) // 2])
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(
        f"input: {{paths: [{src.parent}]}}\noutput: {{dir: {tmp_path / 'out'}, format: jsonl}}\n"
        "count_tokens: false\nstages: [normalize]\n"
    )
    with pytest.raises(SystemExit) as exit:
        main(["data", "run", str(pipeline)])
    err = capsys.readouterr().err.strip()
    assert exit.value.code == 2 and len(err.splitlines()) == 1
    assert str(src) in err and "allow_damaged_inputs: true" in err
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # over this module's filter of the warning
        main(["data", "run", str(pipeline), "allow_damaged_inputs=true"])
    printed = capsys.readouterr()
    assert "data pipeline done" in printed.out
    [warning] = printed.err.strip().splitlines()  # one line, not Python's file:line and source line
    assert warning.startswith("herd: warning: ") and str(src) in warning and "accepted" in warning


def test_plain_jsonl_cut_in_its_last_line(tmp_path):
    start = len(JSONL) - len(json.dumps(RECORDS[-1])) - 1
    src = write(tmp_path / "in", "a.jsonl", JSONL[: start + 20])
    run_pipeline(config(src.parent, tmp_path / "out", allow_damaged_inputs=True))
    assert len(list(read_documents([tmp_path / "out"]))) == len(RECORDS) - 1
    [entry] = damage(tmp_path / "out")
    assert (entry["reason"], entry["line"], entry["offset"]) == ("truncated_file", len(RECORDS), start)
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["stages"][0]["dropped"] == {"truncated_file": 1}


@pytest.mark.parametrize("name", ["a.jsonl.zst", "a.jsonl.gz"])
def test_uncompressed_file_named_compressed_is_a_damaged_file(tmp_path, name):
    src = write(tmp_path / "in", name, HEAD)
    write(tmp_path / "in", "b.jsonl", HEAD)  # the other input is read as usual
    with pytest.raises(HerdError, match=name):
        run_pipeline(config(src.parent, tmp_path / "out"))
    [entry] = damage(tmp_path / "out")
    assert (entry["file"], entry["reason"], entry["line"]) == (str(src), "damaged_file", 1)
    assert len(list(read_documents([tmp_path / "out"]))) == 30


def test_truncated_parquet_is_a_damaged_file_even_when_split_into_tasks(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(RECORDS), buffer, row_group_size=500)
    data = buffer.getvalue()
    src = write(tmp_path / "in", "a.parquet", data[: len(data) * 6 // 10])
    write(tmp_path / "in", "b.jsonl", HEAD)
    run_pipeline(config(src.parent, tmp_path / "out", tasks=4, allow_damaged_inputs=True))
    [entry] = damage(tmp_path / "out")
    assert (entry["file"], entry["reason"], entry["offset"]) == (str(src), "damaged_file", None)


def test_damaged_shard_resumes_to_the_same_outputs(tmp_path):
    compressed = COMPRESS[".jsonl.zst"](JSONL)
    write(tmp_path / "in", "a.jsonl.zst", compressed[: len(compressed) // 3])
    write(tmp_path / "in", "b.jsonl.zst", compressed)
    cfg = config(tmp_path / "in", tmp_path / "out", workers=2, allow_damaged_inputs=True)
    run_pipeline(cfg)
    before = outputs(tmp_path / "out")
    for path in (tmp_path / "out" / "_run" / "done").iterdir():  # as if killed before shard 0 finished
        if "shard-00000" in path.name:
            path.unlink()
    (tmp_path / "out" / "shard-00000.jsonl").unlink()
    run_pipeline(cfg)
    assert outputs(tmp_path / "out") == before


def test_intact_compressed_inputs_read_as_before(tmp_path):
    """Multi-frame .zst and multi-member .gz read whole; outputs and stats equal the plain file's."""
    half = JSONL.index(b"\n", len(JSONL) // 2) + 1
    frames = COMPRESS[".jsonl.zst"](JSONL[:half]) + COMPRESS[".jsonl.zst"](JSONL[half:])
    members = COMPRESS[".jsonl.gz"](JSONL[:half]) + COMPRESS[".jsonl.gz"](JSONL[half:])
    results = {}
    for name, data in {"a.jsonl": JSONL, "a.jsonl.zst": frames, "a.jsonl.gz": members}.items():
        run_pipeline(config(write(tmp_path / name, name, data), tmp_path / name / "out"))
        files = outputs(tmp_path / name / "out")
        files["stats.json"] = files["stats.json"].replace(str(tmp_path / name).encode(), b"")
        results[name] = files
    assert results["a.jsonl.zst"] == results["a.jsonl"] == results["a.jsonl.gz"]
    assert b"damaged" not in results["a.jsonl"]["stats.json"] and b"Damaged" not in results["a.jsonl"]["report.md"]


def test_readers_outside_the_pipeline_raise_on_damage_after_the_readable_records(tmp_path):
    """Mixing, quality sampling, tokenizer training and read_documents read through these: no silent loss."""
    compressed = COMPRESS[".jsonl.gz"](JSONL)
    src = write(tmp_path / "in", "a.jsonl.gz", compressed[: len(compressed) // 2])
    expected = recoverable_lines(".jsonl.gz", compressed[: len(compressed) // 2])
    cfg = InputConfig(paths=[str(src)])
    for documents in (read_documents([src]), read_texts(cfg, input_files(cfg))):
        got = []
        with pytest.raises(HerdError, match=f"{src}:{expected + 1}: truncated_file .*allow_damaged_inputs: true"):
            got.extend(documents)
        assert len(got) == expected
