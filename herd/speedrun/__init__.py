"""`herd speedrun`: the whole Llama 3 recipe, end to end, on the embedded default corpus (`herd.corpus`).

corpus -> data pipelines -> tokenizer -> token shards -> pretrain -> anneal -> SFT -> reward model ->
rejection sampling -> SFT round 2 (with the best sampled replies) -> DPO -> eval (base / SFT / SFT2 / DPO,
refusal rates included) -> safety (Code Shield, a Llama Guard fine-tuned from the annealed base) -> RUN/final
(chat-ready) and RUN/report.md. SFT and DPO data include safety data (herd.speedrun.safety_data).

```python
from herd.speedrun import speedrun
report = speedrun("tiny", "runs/speedrun", ["pretrain.steps=800"])   # -> Path of RUN/report.md
```

Every stage writes RUN/NN-stage/speedrun.json; running the same command again skips finished stages and
resumes an interrupted one. Presets: see `herd.speedrun.presets` (micro, tiny, gpu, node), each a `SpeedrunConfig`
(`herd.speedrun.config`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from herd.config_overrides import to_dict
from herd.run_dir import write_json
from herd.speedrun.config import SpeedrunConfig
from herd.speedrun.presets import PRESETS, preset_config
from herd.speedrun.run import STAGES, RunContext, run_stages


def speedrun(preset: str = "tiny", out: str | Path = "runs/speedrun", overrides: Sequence[str] = (),
             log: Callable[[str], None] = print) -> Path:
    """Run (or finish) the speedrun of `preset` in `out`; returns the path of the report card."""
    from herd.speedrun.report import write_report

    config = preset_config(preset, tuple(overrides))
    run = Path(out)
    write_json(run / "speedrun_config.json", {"preset": preset, "overrides": list(overrides), "config": to_dict(config)},
               indent=1)
    started = time.time()
    ctx = RunContext(run, config)
    run_stages(ctx, log)
    report = write_report(ctx, preset, wall_s=time.time() - started)
    log(f"[speedrun] report card: {report}; chat with: herd chat --model {run / 'final'}")
    return report


__all__ = ["PRESETS", "STAGES", "SpeedrunConfig", "preset_config", "speedrun"]
