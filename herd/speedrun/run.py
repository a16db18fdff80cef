"""The speedrun's driver: stages in order, each in its own RUN/NN-name directory with a `speedrun.json` manifest
(stage, config, duration, CPU seconds of this process: a figure other load on the machine hardly moves, outputs).
A stage whose manifest is complete with the same config chain is skipped; an interrupted one runs again and its
library function resumes from what is on disk (pipeline shards, token shards, training checkpoints). A stage dir
holding a run of another chain (finished or not: the chain in `speedrun.json`, else `speedrun.started`) is cleared
first: resuming it would continue the old run under the new settings (an SFT of 720 steps picking up the finished
560-step one)."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from herd.config_overrides import to_dict
from herd.run_dir import read_manifest, write_manifest, write_text
from herd.speedrun import data_stages, eval_stages, post_stages, safety_stage, train_stages
from herd.speedrun.config import SpeedrunConfig

MANIFEST = "speedrun.json"
STARTED = "speedrun.started"
"""Written when a stage starts running: the chain whose run its directory holds until the manifest says so."""
StageFn = Callable[["RunContext", Path, Any], dict[str, Any]]
STAGES: dict[str, StageFn] = {
    "corpus": data_stages.corpus_stage,
    "data": data_stages.data_stage,
    "tokenizer": data_stages.tokenizer_stage,
    "tokenize": data_stages.tokenize_stage,
    "pretrain": train_stages.pretrain_stage,
    "anneal": train_stages.anneal_stage,
    "sft": post_stages.sft_stage,
    "rm": post_stages.rm_stage,
    "rejection": post_stages.rejection_stage,
    "sft2": post_stages.sft2_stage,
    "dpo": post_stages.dpo_stage,
    "eval": eval_stages.eval_stage,
    "safety": safety_stage.safety_stage,
    "final": eval_stages.final_stage,
}


@dataclass
class RunContext:
    """A speedrun in progress: its directory, its config and the manifests of the stages done so far."""

    run: Path
    config: SpeedrunConfig
    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def device(self) -> str:
        return self.config.device

    @property
    def dtype(self) -> Literal["auto", "float32", "bfloat16"]:
        return self.config.dtype

    @property
    def progress(self) -> bool:
        return self.config.progress

    def stage_dir(self, name: str) -> Path:
        return self.run / f"{list(STAGES).index(name) + 1:02d}-{name}"

    def settings(self, name: str) -> Any:
        """The config section of stage `name`."""
        return getattr(self.config, name)

    def outputs(self, name: str) -> dict[str, Any]:
        return self.manifests[name]["outputs"]


def run_stages(ctx: RunContext, log: Callable[[str], None] = print, *, until: str | None = None) -> None:
    """Run the stages in order (through `until` when given), skipping those already complete."""
    chain = ""
    for name, fn in STAGES.items():
        if until is not None and list(STAGES).index(name) > list(STAGES).index(until):
            return
        settings = ctx.settings(name)
        recorded = to_dict(settings)
        identity = [chain, name, recorded, ctx.seed, ctx.device] + ([ctx.dtype] if ctx.dtype != "auto" else [])
        chain = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        out = ctx.stage_dir(name)
        path = out / MANIFEST
        done = read_manifest(path, chain, key="chain")
        if done:
            ctx.manifests[name] = done
            log(f"[speedrun] {name}: done already ({path}), skipped")
            continue
        if other_run(out, chain):
            log(f"[speedrun] {name}: {out} holds a run of other settings; cleared")
            shutil.rmtree(out)
        log(f"[speedrun] {name}: running in {out}")
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / STARTED, chain)
        started, cpu = time.time(), time.process_time()
        outputs = fn(ctx, out, settings)
        manifest = {"stage": name, "chain": chain, "config": recorded, "seed": ctx.seed, "device": ctx.device,
                    "dtype": ctx.dtype, "started": started, "duration_s": time.time() - started,
                    "cpu_s": time.process_time() - cpu, "outputs": outputs}
        ctx.manifests[name] = write_manifest(path, manifest, default=str)
        log(f"[speedrun] {name}: finished in {manifest['duration_s']:.1f}s")


def other_run(out: Path, chain: str) -> bool:
    """Whether stage dir `out` holds files of a run of another chain: the chain its manifest (else its start marker)
    records differs, or it records none (files of a run from before the marker: settings unknown)."""
    return out.is_dir() and any(out.iterdir()) and recorded_chain(out) != chain


def recorded_chain(out: Path) -> str | None:
    """The chain of the run in stage dir `out`: its manifest's, else its start marker's, else None."""
    try:
        return json.loads((out / MANIFEST).read_text(encoding="utf-8")).get("chain")
    except (OSError, ValueError, AttributeError):
        pass
    try:
        return (out / STARTED).read_text(encoding="utf-8").strip()
    except OSError:
        return None
