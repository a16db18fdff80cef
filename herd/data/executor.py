"""The executor: disjoint input shards per task (whole files or parts of large ones), completion markers, resumable
and idempotent; tasks run in local processes or as Ray tasks (`ray_executor`). Global stages (dedup) split the pipeline into segments: each segment
runs per shard and stores the next global stage's index; that stage decides once, the next segment applies it.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import pickle
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

from herd.data.document import BadRecord, DamagedInput, Document
from herd.data.readers import InputConfig, InputPart, open_binary, read_file
from herd.data.stage import GlobalStage, Stage, StageContext
from herd.data.stats import StageStats, merge_stats, render_report
from herd.data.tokens import cached_tokenizer
from herd.data.writers import OutputFormat, ShardWriter, suffix
from herd.errors import HerdError
from herd.run_dir import atomic_open, write_bytes, write_json, write_text

RUN_DIR = "_run"  # bookkeeping under the output directory; readers skip `_` folders
INTERMEDIATE_FORMAT: OutputFormat = "jsonl.zst"


@dataclass
class RunSpec:
    """Everything a task needs, picklable: the stages, each shard's input parts and where things go."""

    stages: list[Stage]
    labels: list[str]
    shards: list[list[InputPart]]
    input: InputConfig
    out_dir: Path
    out_format: OutputFormat
    count_tokens: bool
    tokenizer: str | None
    write_dropped: bool

    @property
    def run_dir(self) -> Path:
        return self.out_dir / RUN_DIR

    def segments(self) -> list[list[int]]:
        """Stage indices per segment; every segment after the first starts with a global stage."""
        segments: list[list[int]] = [[]]
        for i, stage in enumerate(self.stages):
            if isinstance(stage, GlobalStage):
                segments.append([])
            segments[-1].append(i)
        return segments

    def shard_name(self, shard: int) -> str:
        return f"shard-{shard:05d}"


Task = tuple[RunSpec, int, int]
TaskMap = Callable[[Callable[[Task], str | None], list[Task]], Iterator[str | None]]
"""Runs a task function over task arguments somewhere, yielding the results as tasks finish (in any order)."""


def execute(
    spec: RunSpec, workers: int, executor: Literal["local", "ray"] = "local", ray_address: str | None = None
) -> list[StageStats]:
    """Run every unfinished task of `spec` on `workers` processes (or Ray tasks); merge stats, write stats.json and
    report.md. The outputs do not depend on the executor or the number of workers."""
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    _check_same_pipeline(spec)
    _warn_single_task(spec, executor)
    segments = spec.segments()
    with ExitStack() as stack:
        task_map = None  # started at the first segment with several pending shards, then reused
        for k, segment in enumerate(segments):
            if k > 0:
                _decide(spec, k, segment[0])
            pending = [(k, i) for i in range(len(spec.shards)) if not _marker(spec, k, i).exists()]
            if task_map is None and len(pending) > 1 and executor == "ray":
                from herd.data.ray_executor import ray_task_map

                task_map = stack.enter_context(ray_task_map(workers, ray_address))
            elif task_map is None and len(pending) > 1 and workers > 1:
                pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(min(workers, len(pending))))
                task_map = pool.imap_unordered
            _run_tasks(spec, pending, task_map, desc=f"segment {k + 1}/{len(segments)}")
    stats = merge_stats(
        json.loads(_stats_path(spec, k, i).read_text()) for k in range(len(segments)) for i in range(len(spec.shards))
    )
    _finish(spec, stats, len(segments))
    return stats


def _warn_single_task(spec: RunSpec, executor: str) -> None:
    """Say so when Ray was asked for but the input makes one shard task, which runs in this process, not on Ray."""
    if len(spec.shards) == 1 and executor == "ray":
        warnings.warn(
            "executor: ray, but the input makes 1 shard task, which runs in this process; set tasks: N to split plain "
            "JSONL / Parquet input into N shards (compressed files stay whole), or pass several input files",
            stacklevel=3,
        )


def _run_tasks(spec: RunSpec, pending: list[tuple[int, int]], task_map: TaskMap | None, desc: str) -> None:
    if not pending:
        return
    (spec.run_dir / "failures.log").unlink(missing_ok=True)
    if task_map is None or len(pending) == 1:
        results: Iterator[str | None] = (_task(spec, k, i) for k, i in pending)
    else:
        results = task_map(_task_star, [(spec, k, i) for k, i in pending])
    failures = [r for r in tqdm(results, total=len(pending), desc=desc, disable=None) if r]
    if failures:
        log = spec.run_dir / "failures.log"
        write_text(log, "\n\n".join(failures))
        last_line = failures[0].strip().splitlines()[-1]
        raise HerdError(
            f"{len(failures)} of {len(pending)} shard tasks failed ({last_line}); finished shards are kept, "
            f"fix the cause (tracebacks in {log}) and re-run to resume"
        )


def _task_star(args: Task) -> str | None:
    return _task(*args)


def _task(spec: RunSpec, k: int, shard: int) -> str | None:
    """Run segment `k` on `shard`; returns a traceback on failure, None on success."""
    writers: list[ShardWriter] = []
    try:
        _run_segment_shard(spec, k, shard, writers)
    except Exception:  # noqa: BLE001 -- any failure of a shard is reported, the other shards go on
        for writer in writers:
            writer.abort()
        return f"segment {k} {spec.shard_name(shard)}:\n{traceback.format_exc()}"
    return None


def _run_segment_shard(spec: RunSpec, k: int, shard: int, writers: list[ShardWriter]) -> None:
    segment = spec.segments()[k]
    last = k == len(spec.segments()) - 1
    name = spec.shard_name(shard)
    all_stats: list[StageStats] = []
    dropped: dict[str, ShardWriter] = {}

    def on_drop_for(label: str) -> Any:
        if not spec.write_dropped:
            return None

        def on_drop(doc: Document, reason: str) -> None:
            if label not in dropped:
                dropped[label] = _open(writers, spec.run_dir / "dropped" / label / f"{name}.jsonl", "jsonl")
            dropped[label].write({**doc.to_record(), "drop_reason": reason})

        return on_drop

    sizer = _sizer(spec)
    if k == 0:
        read_stats = StageStats("read")
        all_stats.append(read_stats)
        errors = _open(writers, spec.run_dir / "errors" / f"{name}.jsonl", "jsonl")
        docs = _counted_out(_read_inputs(spec, shard, read_stats, errors), read_stats, sizer)
    else:
        docs = _read_intermediate(spec.run_dir / f"seg{k - 1}" / f"{name}{suffix(INTERMEDIATE_FORMAT)}")
    for index in segment:
        stage = spec.stages[index]
        stats = StageStats(spec.labels[index])
        all_stats.append(stats)
        stage.setup()
        if isinstance(stage, GlobalStage):
            stage.decision = _load_pickle(_decision_path(spec, k))[shard]
        ctx = StageContext(stats=stats, shard=shard, on_drop=on_drop_for(spec.labels[index]))
        docs = _counted_out(stage.process(_counted_in(docs, stats, sizer), ctx), stats, sizer)

    if last:
        out = _open(writers, spec.out_dir / f"{name}{suffix(spec.out_format)}", spec.out_format)
        for doc in docs:
            out.write_document(doc)
    else:
        next_stage = spec.stages[spec.segments()[k + 1][0]]
        assert isinstance(next_stage, GlobalStage)
        next_stage.setup()
        out = _open(writers, spec.run_dir / f"seg{k}" / f"{name}{suffix(INTERMEDIATE_FORMAT)}", INTERMEDIATE_FORMAT)
        write_bytes(_index_path(spec, k, shard), pickle.dumps(next_stage.index(_written(docs, out))))
    for writer in writers:
        writer.close()
    write_bytes(_stats_path(spec, k, shard), json.dumps([s.to_dict() for s in all_stats]).encode())
    write_bytes(_marker(spec, k, shard), b"done\n")


def _written(docs: Iterator[Document], out: ShardWriter) -> Iterator[Document]:
    for doc in docs:
        out.write({"text": doc.text, "id": doc.id, "metadata": doc.metadata})
        yield doc


def _read_inputs(spec: RunSpec, shard: int, stats: StageStats, errors: ShardWriter) -> Iterator[Document]:
    for part in spec.shards[shard]:
        for item in read_file(part, spec.input):
            stats.docs_in += 1
            if isinstance(item, BadRecord):
                stats.drop(item.reason)
                errors.write({"location": item.location, "reason": item.reason, "detail": item.detail})
                if isinstance(item, DamagedInput):
                    stats.damaged.append(item.summary())
            else:
                yield item


def _read_intermediate(path: Path) -> Iterator[Document]:
    with open_binary(path) as stream:
        for line in stream:
            record = json.loads(line)
            yield Document(text=record["text"], id=record["id"], metadata=record["metadata"])


def _counted_in(docs: Iterator[Document], stats: StageStats, sizer: Any) -> Iterator[Document]:
    for doc in docs:
        n_bytes, n_tokens = sizer(doc)
        stats.docs_in += 1
        stats.bytes_in += n_bytes
        stats.tokens_in += n_tokens
        yield doc


def _counted_out(docs: Iterator[Document], stats: StageStats, sizer: Any) -> Iterator[Document]:
    for doc in docs:
        n_bytes, n_tokens = sizer(doc)
        stats.docs_out += 1
        stats.bytes_out += n_bytes
        stats.tokens_out += n_tokens
        yield doc


def _sizer(spec: RunSpec) -> Any:
    """A function doc -> (UTF-8 bytes, tokens) that caches on the document while its text is unchanged."""
    encode = cached_tokenizer(spec.tokenizer).encode if spec.count_tokens else None

    def size(doc: Document) -> tuple[int, int]:
        cached = doc.sizes
        if cached is None or cached[0] is not doc.text:
            text = doc.text
            cached = (text, len(text.encode("utf-8")), len(encode(text)) if encode else 0)
            doc.sizes = cached
        return cached[1], cached[2]

    return size


def _decide(spec: RunSpec, k: int, stage_index: int) -> None:
    """Run global stage `stage_index`'s decision over the shard indexes segment `k - 1` left, once."""
    path = _decision_path(spec, k)
    if path.exists():
        return
    stage = spec.stages[stage_index]
    assert isinstance(stage, GlobalStage)
    stage.setup()
    indexes = [_load_pickle(_index_path(spec, k - 1, i)) for i in range(len(spec.shards))]
    decision = stage.decide(indexes)
    assert len(decision) == len(spec.shards), f"{spec.labels[stage_index]} decided for the wrong number of shards"
    write_bytes(path, pickle.dumps(decision))


def _finish(spec: RunSpec, stats: list[StageStats], n_segments: int) -> None:
    errors = sorted((spec.run_dir / "errors").glob("shard-*.jsonl"))
    with atomic_open(spec.run_dir / "errors.jsonl", "wb") as merged:
        merged.writelines(path.read_bytes() for path in errors)
    summary = {
        "shards": len(spec.shards),
        "input_files": len({part.path for parts in spec.shards for part in parts}),
        "input_parts": sum(len(parts) for parts in spec.shards),
        "stages": [s.to_dict() for s in stats],
        "errors_file": str(spec.run_dir / "errors.jsonl"),
    }
    write_json(spec.out_dir / "stats.json", summary)
    write_text(spec.out_dir / "report.md", render_report(stats))
    for k in range(n_segments - 1):  # intermediate documents are no longer needed once every shard is done
        for path in (spec.run_dir / f"seg{k}").glob(f"*{suffix(INTERMEDIATE_FORMAT)}"):
            path.unlink()


def _check_same_pipeline(spec: RunSpec) -> None:
    """Refuse to resume into an output directory that holds a run of a different pipeline or input."""
    described = json.dumps(
        {
            "stages": [repr(s) for s in spec.stages],
            "shards": [[str(part) for part in parts] for parts in spec.shards],
            "format": spec.out_format,
            "input": repr(spec.input),
        },
        sort_keys=True,
    )
    fingerprint = hashlib.sha256(described.encode()).hexdigest()
    path = spec.run_dir / "pipeline.sha256"
    if path.exists() and path.read_text().strip() != fingerprint:
        raise HerdError(
            f"{spec.out_dir} holds the outputs of a different pipeline or input; choose a new output.dir or delete it"
        )
    write_text(path, fingerprint + "\n")


def _open(writers: list[ShardWriter], path: Path, format: OutputFormat) -> ShardWriter:
    writer = ShardWriter(path, format)
    writers.append(writer)
    return writer


def _load_pickle(path: Path) -> Any:
    return pickle.loads(path.read_bytes())


def _marker(spec: RunSpec, k: int, shard: int) -> Path:
    return spec.run_dir / "done" / f"seg{k}-{spec.shard_name(shard)}"


def _stats_path(spec: RunSpec, k: int, shard: int) -> Path:
    return spec.run_dir / "stats" / f"seg{k}-{spec.shard_name(shard)}.json"


def _index_path(spec: RunSpec, k: int, shard: int) -> Path:
    return spec.run_dir / f"seg{k}" / f"{spec.shard_name(shard)}.index.pkl"


def _decision_path(spec: RunSpec, k: int) -> Path:
    return spec.run_dir / f"seg{k}" / "decision.pkl"


def split_shards(parts: Sequence[InputPart], tasks: int) -> list[list[InputPart]]:
    """`parts` cut into `tasks` disjoint shards of consecutive parts (0: one shard per part), so the output
    shards in order hold the documents in input order; never more shards than parts."""
    n = max(1, min(tasks or len(parts), len(parts)))
    return [list(parts[len(parts) * i // n : len(parts) * (i + 1) // n]) for i in range(n)]
