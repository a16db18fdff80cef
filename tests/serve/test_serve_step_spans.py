"""benchmarks/decode_profile.py's split of the serving engine's decode steps (its serve-c1 paths' breakdown)."""

from __future__ import annotations

import herd
import herd.serve.engine as engine_module
from decode_profile import StepSpans
from herd.serve import Engine, EngineConfig
from serve_throughput import Request, run_herd


def test_step_spans_time_each_decode_step_and_its_parts():
    model, tok = herd.load("tiny")
    engine = Engine(model, tok, EngineConfig(max_running=1))
    eager = engine_module.run_segments
    spans = StepSpans(engine)
    run_herd(engine, [Request(list(range(1, 20)), 6)], 1)
    spans.close()
    assert engine_module.run_segments is eager
    # six tokens: the first comes from the prompt's prefill step, the other five from decode steps
    assert len(spans.times["step"]) == 5 and all(len(spans.times[part]) == 5 for part in StepSpans.PARTS)
    for i, step in enumerate(spans.times["step"]):
        assert sum(spans.times[part][i] for part in StepSpans.PARTS) <= step
    assert spans.line().startswith("decode step ") and "voluntary context switches/token" in spans.line()
