"""A pipeline: input, output and an ordered list of stages, from a YAML file or Python; `run_pipeline` runs it.

Stage entries in YAML are a stage name, or a one-key mapping of name to options (`- gopher_quality: {min_words: 30}`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from herd.config_overrides import apply_overrides, from_dict, read_config_file
from herd.data.dedup import ExactDedup, LineDedup, UrlDedup
from herd.data.domain import DomainTagger
from herd.data.executor import RunSpec, execute, split_shards
from herd.data.langid import LanguageFilter
from herd.data.minhash import MinHashDedup
from herd.data.normalize import Normalize
from herd.data.outliers import TokenKLFilter
from herd.data.pii import PIIMask
from herd.data.quality import C4Quality, FineWebQuality, GopherQuality, GopherRepetition
from herd.data.quality_model import QualityClassifierFilter
from herd.data.readers import InputConfig, input_files, input_parts
from herd.data.safety_words import BadWordsFilter
from herd.data.semantic import SemanticDedup
from herd.data.stage import Stage
from herd.data.stats import StageStats
from herd.data.writers import OutputFormat
from herd.errors import HerdError

STAGE_TYPES: dict[str, type[Stage]] = {
    cls.name: cls
    for cls in (
        Normalize,
        GopherQuality,
        GopherRepetition,
        C4Quality,
        FineWebQuality,
        BadWordsFilter,
        PIIMask,
        LanguageFilter,
        TokenKLFilter,
        ExactDedup,
        UrlDedup,
        LineDedup,
        MinHashDedup,
        SemanticDedup,
        QualityClassifierFilter,
        DomainTagger,
    )
}


@dataclass
class OutputConfig:
    """Where the kept documents go."""

    dir: str
    """Output directory: shard files, stats.json, report.md, and `_run/` (markers, errors, dropped documents)."""
    format: OutputFormat = "jsonl.zst"
    """Shard file format: jsonl, jsonl.gz, jsonl.zst or parquet."""


@dataclass
class PipelineConfig:
    """A data pipeline run (`herd data run PIPELINE.yaml`)."""

    input: InputConfig
    output: OutputConfig
    stages: list[Any] = field(default_factory=list)
    """Stage names or {name: {option: value}} mappings, run in order."""
    tasks: int = 0
    """Number of disjoint shards (one output file each); 0: one per input part (a file, or a part of a large
    one: see `input.part_bytes`). More tasks than parts split the largest JSONL / Parquet files further."""
    workers: int = 1
    """Processes running shard tasks at once."""
    executor: Literal["local", "ray"] = "local"
    """Where tasks run: `local` processes, or `ray` tasks (same outputs; needs `pip install ray`)."""
    ray_address: str | None = None
    """With `executor: ray`: a running cluster to join (`auto`, `ray://head:10001`); None: start a local Ray
    instance of `workers` CPUs (or use the one this process already joined)."""
    count_tokens: bool = True
    """Count Llama 3 tokens in and out of every stage (costs a tokenizer pass per changed document)."""
    tokenizer: str | None = None
    """Tokenizer file for token counts; None: Meta's 128K Llama 3 tokenizer."""
    write_dropped: bool = False
    """Write every dropped document, with its reason, under `_run/dropped/<stage>/`."""
    allow_damaged_inputs: bool = False
    """Finish with success although input files break off or are corrupt; either way their records before the
    damage are kept and stats.json / report.md list them. False: the run ends in an error naming them."""

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise HerdError(f"workers must be at least 1, got {self.workers}")
        if self.tasks < 0:
            raise HerdError(f"tasks must be 0 (one per input part) or more, got {self.tasks}")


def build_stage(spec: Any) -> Stage:
    """A stage from its YAML entry: a name, or a one-key mapping {name: options}."""
    if isinstance(spec, Stage):
        return spec
    if isinstance(spec, str):
        name, options = spec, {}
    elif isinstance(spec, dict) and len(spec) == 1:
        name, options = next(iter(spec.items()))
        options = options or {}
    else:
        raise HerdError(f"stage entry {spec!r} must be a name or a one-key mapping {{name: {{option: value}}}}")
    if name not in STAGE_TYPES:
        raise HerdError(f"unknown stage {name!r}; known stages: {', '.join(sorted(STAGE_TYPES))}")
    if not isinstance(options, dict):
        raise HerdError(f"options of stage {name!r} must be a mapping of option: value, got {options!r}")
    return from_dict(STAGE_TYPES[name], options, where=f"{name}.")


def run_pipeline(
    config: str | Path | PipelineConfig, stages: Sequence[Stage] | None = None, overrides: Sequence[str] = ()
) -> list[StageStats]:
    """Run a pipeline (a YAML/JSON path or a PipelineConfig; `stages` replaces its stage list); the merged stats.

    Finished shards are skipped, so a re-run after an interruption does only the rest.
    """
    if not isinstance(config, PipelineConfig):
        data = apply_overrides(read_config_file(config), overrides)
        missing = [key for key in ("input", "output") if key not in data]
        if missing:
            raise HerdError(f"pipeline {config} has no {missing[0]!r} section; see herd/data/README.md for the format")
        try:
            config = from_dict(PipelineConfig, data)
        except TypeError as e:  # a required option (input.paths, output.dir) is missing
            raise HerdError(f"pipeline {config}: {e}; see herd/data/README.md for the format") from None
    built = [build_stage(s) for s in (config.stages if stages is None else stages)]
    if not built:
        raise HerdError("the pipeline has no stages; list some under `stages:` (names: " + ", ".join(STAGE_TYPES) + ")")
    spec = RunSpec(
        stages=built,
        labels=_labels(built),
        shards=split_shards(input_parts(config.input, input_files(config.input), config.tasks), config.tasks),
        input=config.input,
        out_dir=Path(config.output.dir),
        out_format=config.output.format,
        count_tokens=config.count_tokens,
        tokenizer=config.tokenizer,
        write_dropped=config.write_dropped,
    )
    stats = execute(spec, config.workers, config.executor, config.ray_address)
    damaged = [entry for s in stats for entry in s.damaged]
    if damaged and not config.allow_damaged_inputs:
        raise HerdError(
            f"{_damage_summary(damaged)}; the records before the damage were kept and the run finished (see "
            "stats.json and report.md); replace the file(s), or set allow_damaged_inputs: true to accept the loss"
        )
    if damaged:
        warnings.warn(f"{_damage_summary(damaged)}, accepted (allow_damaged_inputs: true)", stacklevel=2)
    return stats


def _damage_summary(damaged: list[dict[str, Any]], shown: int = 3) -> str:
    """The damaged inputs in a few words: how many, the first `shown` with where each breaks off."""
    named = ", ".join(f"{d['file']} ({d['reason']} at line {d['line']:,})" for d in damaged[:shown])
    more = f" and {len(damaged) - shown} more" if len(damaged) > shown else ""
    return f"{len(damaged)} damaged input file(s): {named}{more}"


def _labels(stages: Sequence[Stage]) -> list[str]:
    """Stage names, numbered where a name repeats (`gopher_quality`, `gopher_quality#2`)."""
    seen: dict[str, int] = {}
    labels = []
    for stage in stages:
        seen[stage.name] = seen.get(stage.name, 0) + 1
        labels.append(stage.name if seen[stage.name] == 1 else f"{stage.name}#{seen[stage.name]}")
    return labels
