"""The cost of structured outputs: serving-engine output tokens/s with half the requests under a JSON-schema grammar
vs none, same model and workload.

    python benchmarks/structured_outputs.py [--model llama3-125m] [--rounds 5] [--requests 32] [--max-tokens 64]

Both sides run `--requests` requests (distinct prompts, temperature 1, seeded) through one `Engine`, 8 at a time
(each finished request is replaced at once), every request making exactly `--max-tokens` tokens: the schema (an
object holding a list of at least 64 short strings) cannot be complete sooner, so both sides generate the same
number of tokens and only the grammar differs. Mostly inside strings, where nearly every id is allowed: the
costliest state for a mask. The sides alternate, `--rounds` times each; medians are reported, with the time the
engine spent waiting for and applying masks, and output tokens per CPU-second of the process (the mask thread
included), which a busy shared machine disturbs less than wall-clock time. On CPU the model's linears are
prepacked as `herd serve` does.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from cpu_info import cpu_line

import herd
from herd.serve import Engine, EngineConfig, RequestParams
from herd.serve.packed import pack_linears

SCHEMA = {
    "type": "json_schema",
    "json_schema": {"name": "notes", "strict": True, "schema": {"type": "object", "properties": {
        "notes": {"type": "array", "items": {"type": "string", "maxLength": 40}, "minItems": 64}}}},
}
CONCURRENCY = 8


def run(engine: Engine, prompts: list[list[int]], constrained: set[int], max_tokens: int) -> tuple[float, float, float]:
    """(output tokens/s, per CPU-second, seconds spent masking) for `prompts`, CONCURRENCY at a time; those in
    `constrained` follow SCHEMA."""
    grammar = engine.grammars.response_format(SCHEMA)
    masker, masking = engine._masker, [0.0]
    fill = masker.mask_

    def timed(*args):  # the engine's whole grammar cost per step: bitmask fill, bias build, add
        start = time.perf_counter()
        fill(*args)
        masking[0] += time.perf_counter() - start

    masker.mask_ = timed
    queue = list(range(len(prompts)))
    produced, start, cpu = 0, time.perf_counter(), time.process_time()
    while queue or engine.has_unfinished():
        while queue and engine.num_running + engine.num_waiting < CONCURRENCY:
            i = queue.pop(0)
            engine.add_request(str(i), prompts[i], RequestParams(
                max_tokens=max_tokens, temperature=1.0, seed=i, grammar=grammar if i in constrained else None))
        for out in engine.step():
            produced += out.token_id is not None
            assert out.finish_reason in (None, "length"), f"request {out.request_id} ended early: {out}"
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    masker.mask_ = fill
    return produced / elapsed, produced / cpu, masking[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama3-125m")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    model, tok = herd.load(args.model, device=args.device)
    if args.device == "cpu":
        model = pack_linears(model)
    engine = Engine(model, tok, EngineConfig(max_running=CONCURRENCY))
    prompts = [tok.encode_dialog([{"role": "user", "content": f"Request {i}: list {i % 7 + 3} short notes."}])
               for i in range(args.requests)]
    sides = {"none": set(), "half constrained": set(range(0, args.requests, 2))}
    run(engine, prompts[:CONCURRENCY], set(range(0, CONCURRENCY, 2)), 8)  # warm-up, grammar compiled
    figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in sides}
    for round_ in range(args.rounds):
        for name in sides if round_ % 2 == 0 else reversed(sides):
            figures[name].append(run(engine, prompts, sides[name], args.max_tokens))
    medians = {name: [statistics.median(column) for column in zip(*runs, strict=True)]
               for name, runs in figures.items()}
    base, base_cpu, _ = medians["none"]
    print(cpu_line())
    print(f"model {args.model} on {args.device}, {torch.get_num_threads()} threads, {args.requests} requests x "
          f"{args.max_tokens} tokens at concurrency {CONCURRENCY}, {args.rounds} rounds (medians)")
    print("| requests under a grammar | output tokens/s | vs none | tokens/CPU-s | vs none | masking s/run | "
          "runs (tokens/s) |")
    print("|---|---|---|---|---|---|---|")
    for name, (speed, per_cpu, masking) in medians.items():
        runs = ", ".join(f"{run[0]:.0f}" for run in figures[name])
        print(f"| {name} | {speed:.1f} | {speed / base:.3f}x | {per_cpu:.1f} | {per_cpu / base_cpu:.3f}x | "
              f"{masking:.3f} | {runs} |")


if __name__ == "__main__":
    main()
