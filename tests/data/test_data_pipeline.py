"""The data pipeline end to end: readers and writers, bad input, stats, YAML configs, resume and idempotence."""

import gzip
import json
import math
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import ClassVar

import pytest

from herd.data import Document, DocumentStage, InputConfig, OutputConfig, PipelineConfig, read_documents, run_pipeline
from herd.data.readers import InputPart, input_files, input_parts, read_file
from herd.data.writers import ShardWriter
from herd.errors import HerdError
from tests.test_run_dir import crash_mid_write
from tests.tiny import write_jsonl

GSM8K = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "benchmarks" / "gsm8k" / "test.jsonl"
SHAKESPEARE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "text" / "tinyshakespeare.txt"


def corpus(tmp_path: Path, n_files: int = 4, per_file: int = 5) -> Path:
    """Small files of distinct documents; every 5th is short (dropped by `gopher_quality: {min_words: 8}`)."""
    root = tmp_path / "in"
    for f in range(n_files):
        records = []
        for i in range(per_file):
            words = 4 if i % 5 == 0 else 12
            text = " ".join(f"the word{f}x{i}y{j} and" for j in range(words // 3))
            records.append({"text": text, "id": f"f{f}-{i}", "url": f"http://x/{f}/{i}"})
        write_jsonl(root / f"part{f}.jsonl", records)
    return root


def config(inputs: Path, out: Path, **kwargs) -> PipelineConfig:
    stages = kwargs.pop("stages", [{"gopher_quality": {"min_words": 8}}])
    return PipelineConfig(
        input=InputConfig(paths=[str(inputs)]),
        output=OutputConfig(dir=str(out), format=kwargs.pop("format", "jsonl")),
        stages=stages,
        count_tokens=kwargs.pop("count_tokens", False),
        **kwargs,
    )


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet"])
def test_writers_and_readers_round_trip(tmp_path, suffix):
    docs = [Document(text=f"doc {i} ünïcode", id=str(i), metadata={"url": f"u{i}"}) for i in range(3)]
    path = tmp_path / f"data{suffix}"
    with ShardWriter(path, suffix[1:]) as writer:
        for d in docs:
            writer.write_document(d)
    assert not list(tmp_path.glob("*.tmp"))
    assert list(read_documents([path])) == docs


def test_writer_abort_leaves_no_file(tmp_path):
    with pytest.raises(RuntimeError), ShardWriter(tmp_path / "x.jsonl.zst") as writer:
        writer.write({"text": "a"})
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_text_directory_reader_and_hidden_folders(tmp_path):
    (tmp_path / "a.txt").write_text("first document")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("second document")
    (tmp_path / "_run").mkdir()
    (tmp_path / "_run" / "c.txt").write_text("bookkeeping, not input")
    docs = list(read_documents([tmp_path]))
    assert [d.text for d in docs] == ["first document", "second document"]
    assert docs[0].id.endswith("a.txt")


def test_hf_disk_reader_or_clear_import_error(tmp_path):
    try:
        import datasets
    except ImportError:
        (tmp_path / "state.json").write_text("{}")
        cfg = InputConfig(paths=[str(tmp_path)])
        with pytest.raises(ImportError, match="pip install datasets"):
            list(read_file(input_files(cfg)[0], cfg))
        return
    datasets.Dataset.from_dict({"text": ["a b", "c d"], "id": ["1", "2"]}).save_to_disk(str(tmp_path / "ds"))
    assert [d.text for d in read_documents([tmp_path / "ds"])] == ["a b", "c d"]


def test_bad_input_is_counted_logged_and_skipped(tmp_path):
    good = [{"text": f"good document number {i}", "id": f"g{i}"} for i in range(3)]
    lines = [
        json.dumps(good[0]).encode(),
        b"{not json",
        json.dumps({"body": "no text field"}).encode(),
        json.dumps(good[1]).encode(),
        b'{"text": "bad \xff\xfe bytes"}',
        json.dumps({"text": "   "}).encode(),
        json.dumps({"text": "x" * 5000}).encode(),
        b'{"text": "lone \\ud800 surrogate"}',
        b"[1, 2]",
        b"",
        json.dumps(good[2]).encode(),
    ]
    src = tmp_path / "in" / "mixed.jsonl"
    src.parent.mkdir()
    src.write_bytes(b"\n".join(lines) + b"\n")
    cfg = config(src.parent, tmp_path / "out", stages=["normalize"])
    cfg.input.max_doc_bytes = 1000
    run_pipeline(cfg)
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    read = stats["stages"][0]
    assert read["name"] == "read" and read["docs_in"] == 10 and read["docs_out"] == 3
    assert read["dropped"] == {"invalid_json": 2, "invalid_utf8": 2, "empty": 1, "missing_text": 1, "too_large": 1}
    errors = [json.loads(line) for line in (tmp_path / "out" / "_run" / "errors.jsonl").read_text().splitlines()]
    assert [e["location"] for e in errors] == [f"{src}:{n}" for n in (2, 3, 5, 6, 7, 8, 9)]
    assert [d.id for d in read_documents([tmp_path / "out"])] == ["g0", "g1", "g2"]  # no good document lost


def test_stats_balance_and_token_counts(tmp_path, meta_tokenizer):
    stages = ["normalize", {"gopher_quality": {"min_words": 8}}, "pii_mask", "exact_dedup"]
    root = corpus(tmp_path)
    write_jsonl(
        root / "part9.jsonl", [{"text": "The WORD0x1y0 and, the word0x1y1 and the word0x1y2 and the word0x1y3 and"}]
    )
    out = tmp_path / "out"
    stats = run_pipeline(config(root, out, stages=stages, count_tokens=True))
    assert [s.name for s in stats] == ["read", "normalize", "gopher_quality", "pii_mask", "exact_dedup"]
    for before, after in pairwise(stats):
        assert after.docs_in == before.docs_out and after.tokens_in == before.tokens_out
    for s in stats:
        assert s.docs_in == s.docs_out + sum(s.dropped.values()), s.name
    assert stats[2].dropped == {"gopher_short_doc": 4}
    assert stats[4].dropped == {"exact_duplicate": 1}  # the copy of f0-1 (case and punctuation differ)
    kept = list(read_documents([out]))
    assert stats[-1].docs_out == len(kept) == 21 - 4 - 1
    assert stats[-1].tokens_out == sum(len(meta_tokenizer.encode(d.text)) for d in kept)
    assert stats[-1].bytes_out == sum(len(d.text.encode()) for d in kept)
    report = (out / "report.md").read_text()
    assert "| gopher_quality | 21 | 17 |" in report and "gopher_short_doc" in report


def test_yaml_pipeline_overrides_and_dropped_writer(tmp_path):
    root = corpus(tmp_path)
    out = tmp_path / "out"
    yaml_file = tmp_path / "pipeline.yaml"
    yaml_file.write_text(
        f"input: {{paths: [{root}]}}\noutput: {{dir: {out}, format: jsonl.gz}}\ncount_tokens: false\n"
        "write_dropped: true\nstages:\n  - normalize\n  - gopher_quality: {min_words: 100}\n"
    )
    stats = run_pipeline(
        yaml_file, overrides=["stages=" + json.dumps(["normalize", {"gopher_quality": {"min_words": 8}}])]
    )
    assert stats[-1].docs_out == 16
    dropped = [
        json.loads(l)
        for p in sorted((out / "_run" / "dropped" / "gopher_quality").glob("*.jsonl"))
        for l in p.read_text().splitlines()
    ]
    assert len(dropped) == 4 and {d["drop_reason"] for d in dropped} == {"gopher_short_doc"}
    assert sorted(out.glob("shard-*")) == [out / f"shard-0000{i}.jsonl.gz" for i in range(4)]


def test_config_errors_are_one_line(tmp_path):
    root = corpus(tmp_path)
    with pytest.raises(HerdError, match="unknown stage 'gopher'"):
        run_pipeline(config(root, tmp_path / "o1", stages=["gopher"]))
    with pytest.raises(HerdError, match="unknown config key 'gopher_quality.min_wrds'"):
        run_pipeline(config(root, tmp_path / "o2", stages=[{"gopher_quality": {"min_wrds": 3}}]))
    with pytest.raises(HerdError, match="input not found"):
        run_pipeline(config(tmp_path / "missing", tmp_path / "o3"))
    bad_yaml = tmp_path / "p.yaml"
    bad_yaml.write_text("stages: [normalize]\n")
    with pytest.raises(HerdError, match="no 'input' section"):
        run_pipeline(bad_yaml)
    run_pipeline(config(root, tmp_path / "o4"))
    with pytest.raises(HerdError, match="different pipeline"):
        run_pipeline(config(root, tmp_path / "o4", stages=["normalize"]))


def test_crash_while_writing_the_fingerprint_does_not_block_the_rerun(tmp_path, monkeypatch):
    """A crash half-way through pipeline.sha256 must not leave a fingerprint the rerun takes for another pipeline's."""
    root, out = corpus(tmp_path), tmp_path / "out"
    crash_mid_write(monkeypatch, out / "_run" / "pipeline.sha256")
    with pytest.raises(OSError, match="simulated crash"):
        run_pipeline(config(root, out))
    monkeypatch.undo()
    run_pipeline(config(root, out))
    assert len(list(out.glob("shard-*.jsonl"))) == 4


@dataclass
class CrashOnce(DocumentStage):
    """Test stage: logs each shard it sees; raises on documents of `crash_file` while `flag` exists."""

    name: ClassVar[str] = "crash_once"
    flag: str = ""
    log: str = ""
    crash_file: str = "part2"

    def apply(self, doc: Document) -> str | None:
        with open(self.log, "a") as f:
            f.write(doc.id.split("-")[0] + "\n")
        if Path(self.flag).exists() and doc.id.startswith(self.crash_file.replace("part", "f")):
            raise RuntimeError("simulated crash")
        return None


def test_resume_after_failure_redoes_only_unfinished_shards(tmp_path):
    from herd.data.dedup import ExactDedup
    from herd.data.normalize import Normalize
    from herd.data.quality import GopherQuality

    root = corpus(tmp_path)
    flag, log = tmp_path / "flag", tmp_path / "log"
    flag.touch()
    stages = [Normalize(), CrashOnce(flag=str(flag), log=str(log)), GopherQuality(min_words=8), ExactDedup()]
    out = tmp_path / "out"
    with pytest.raises(HerdError, match="1 of 4 shard tasks failed .*re-run to resume"):
        run_pipeline(config(root, out, format="jsonl.zst"), stages=stages)
    assert sorted(p.name for p in out.glob("shard-*")) == []  # the dedup segment never started
    assert not list(out.rglob("*.tmp"))
    flag.unlink()
    log.write_text("")
    run_pipeline(config(root, out, format="jsonl.zst"), stages=stages)
    assert set(log.read_text().split()) == {"f2"}  # only the failed shard ran again
    clean = tmp_path / "clean"
    run_pipeline(config(root, clean, format="jsonl.zst"), stages=stages)
    names = sorted(p.name for p in clean.glob("shard-*"))
    assert names == sorted(p.name for p in out.glob("shard-*")) and len(names) == 4
    for name in names:
        assert (out / name).read_bytes() == (clean / name).read_bytes()
    assert (out / "stats.json").read_text().replace(str(out), "") == (clean / "stats.json").read_text().replace(
        str(clean), ""
    )
    log.write_text("")
    run_pipeline(config(root, out, format="jsonl.zst"), stages=stages)  # everything done: nothing runs
    assert log.read_text() == ""


def test_two_workers_match_one_worker(tmp_path):
    root = corpus(tmp_path, n_files=3)
    stages = ["normalize", {"gopher_quality": {"min_words": 8}}, "minhash_dedup"]
    run_pipeline(config(root, tmp_path / "one", stages=stages, workers=1))
    run_pipeline(config(root, tmp_path / "two", stages=stages, workers=2))
    for path in sorted((tmp_path / "one").glob("shard-*")):
        assert path.read_bytes() == (tmp_path / "two" / path.name).read_bytes()


def test_real_corpora(tmp_path):
    if not GSM8K.is_file() or not SHAKESPEARE.is_file():
        pytest.skip("shared/data gsm8k or tinyshakespeare not present")
    root = tmp_path / "in"
    root.mkdir()
    lines = SHAKESPEARE.read_text().split("\n\n")
    for i in range(4):
        (root / f"play{i}.txt").write_text("\n\n".join(lines[i * 400 : (i + 1) * 400]))
    cfg = PipelineConfig(
        input=InputConfig(paths=[str(root), str(GSM8K)], text_key="text"),
        output=OutputConfig(dir=str(tmp_path / "out")),
        stages=["normalize", "language", "exact_dedup"],
        count_tokens=False,
    )
    stats = run_pipeline(cfg)
    read = stats[0]
    assert read.docs_out == 4 and read.dropped == {"missing_text": 1319}  # gsm8k has `question`, not `text`


@dataclass
class LogIds(DocumentStage):
    """Test stage: appends the id of every document it sees to `log`; keeps them all."""

    name: ClassVar[str] = "log_ids"
    log: str = ""

    def apply(self, doc: Document) -> str | None:
        with open(self.log, "a") as f:
            f.write(doc.id + "\n")
        return None


def big_jsonl(path: Path, n: int = 3000) -> Path:
    """Records of varied length; every 7th has no id (its id becomes path:line), some lines are bad or blank,
    and every 50th text repeats an earlier one (for dedup across parts)."""
    lines = []
    for i in range(n):
        text = "a repeated document" if i % 50 == 0 else f"document {i} " + "word " * (i % 37)
        record = {"text": text, "id": f"d{i}"}
        if i % 7 == 0:
            del record["id"]
        lines.append(b"{not json" if i % 101 == 0 else b"" if i % 113 == 0 else json.dumps(record).encode())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def outputs(out: Path) -> list[Document]:
    return [doc for shard in sorted(out.glob("shard-*")) for doc in read_documents([shard])]


def test_parts_of_a_big_jsonl_read_like_the_whole_file(tmp_path):
    src = big_jsonl(tmp_path / "in" / "big.jsonl")
    cfg = InputConfig(paths=[str(src)], part_bytes=4096)
    parts = input_parts(cfg, [src])
    assert len(parts) == math.ceil(src.stat().st_size / 4096)
    data = src.read_bytes()
    assert all(part.start == 0 or data[part.start - 1 : part.start] == b"\n" for part in parts)
    assert [(p.start, p.stop) for p in parts] == list(pairwise([0, *[p.stop for p in parts]]))  # no gap, no overlap
    assert [item for part in parts for item in read_file(part, cfg)] == list(read_file(src, cfg))
    assert len(input_parts(InputConfig(paths=[str(src)], part_bytes=0), [src], min_parts=5)) == 5
    whole = tmp_path / "whole.jsonl.gz"  # compressed JSONL cannot seek: it stays whole
    whole.write_bytes(gzip.compress(data))
    assert input_parts(cfg, [whole], min_parts=5) == [InputPart(whole)]


def test_one_big_file_split_into_tasks_gives_the_whole_files_documents_in_order(tmp_path):
    src = big_jsonl(tmp_path / "in" / "big.jsonl")
    stages = ["normalize", "exact_dedup"]
    run_pipeline(config(src, tmp_path / "one", stages=stages))  # 64 MiB parts: one task
    run_pipeline(config(src, tmp_path / "four", stages=stages, tasks=4, workers=2))
    assert len(list((tmp_path / "one").glob("shard-*"))) == 1 and len(list((tmp_path / "four").glob("shard-*"))) == 4
    docs = outputs(tmp_path / "one")
    assert outputs(tmp_path / "four") == docs and len(docs) > 2000
    ids = [doc.id for doc in docs]
    assert ids[:3] == ["d1", "d2", "d3"] and f"{src}:8" in ids  # id-less records: path:line, as when whole
    assert sum(doc.text == "a repeated document" for doc in docs) == 1  # deduplicated across parts
    one, four = (json.loads((tmp_path / d / "stats.json").read_text()) for d in ("one", "four"))
    assert (four["shards"], four["input_files"], four["input_parts"]) == (4, 1, 4)
    assert four["stages"] == one["stages"]
    errors = {d: (tmp_path / d / "_run" / "errors.jsonl").read_text() for d in ("one", "four")}
    assert errors["four"] == errors["one"] and f"{src}:102" in errors["one"]  # line numbers hold across parts


def test_rerun_of_a_split_file_redoes_only_unfinished_parts(tmp_path):
    src = big_jsonl(tmp_path / "in" / "big.jsonl", n=400)
    log, out = tmp_path / "log", tmp_path / "out"
    cfg = config(src, out, stages=[LogIds(log=str(log))], tasks=3)
    run_pipeline(cfg)
    before = {p.name: p.read_bytes() for p in out.glob("shard-*")}
    assert len(before) == 3
    seen = log.read_text().split()
    third = [doc.id for doc in read_documents([out / "shard-00002.jsonl"])]
    (out / "_run" / "done" / "seg0-shard-00002").unlink()
    (out / "shard-00002.jsonl").unlink()
    log.write_text("")
    run_pipeline(cfg)
    assert log.read_text().split() == third and set(third) < set(seen)  # only the unfinished part ran
    assert {p.name: p.read_bytes() for p in out.glob("shard-*")} == before
    log.write_text("")
    run_pipeline(cfg)
    assert log.read_text() == ""


def test_parquet_row_groups_split_into_tasks(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "in" / "rows.parquet"
    src.parent.mkdir()
    texts = [f"row number {i} has" + " some words" * (i % 5 + 1) for i in range(500)]
    pq.write_table(pa.table({"text": texts}), src, row_group_size=40)  # 13 row groups, no ids
    parts = input_parts(InputConfig(paths=[str(src)]), [src], min_parts=3)
    assert [(p.start, p.stop, p.first) for p in parts] == [(0, 4, 1), (4, 8, 161), (8, 13, 321)]
    run_pipeline(config(src, tmp_path / "out", stages=["normalize"], tasks=3))
    docs = outputs(tmp_path / "out")
    assert [d.text for d in docs] == texts
    assert [d.id for d in docs] == [f"{src}:{i}" for i in range(1, 501)]
