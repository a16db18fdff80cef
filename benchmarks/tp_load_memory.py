"""Peak RSS of each tensor-parallel rank loading its slice of a 2-shard Meta checkpoint (tp=2, both ranks at once)
against one process loading the checkpoint whole (issue 28 item 2; target: a rank <= 0.6x the whole load).

Writes a ~250M-parameter bf16 model (~0.5 GB) as Meta `consolidated.00.pth` + `consolidated.01.pth` (herd's
writer, mp=2), then per round in fresh processes: `herd.checkpoint.load(dir)` (the whole model) and two ranks each
running `herd.checkpoint.load(dir, tp=...)` (its slice by `load_shard`, in a parallelized model). Every process
reads each of its weights once after loading (a sum in bf16: no fp32 copy), so mapped pages count. Prints medians
over the rounds of peak RSS (ru_maxrss) and of peak minus the RSS after the imports (a first model built on the
meta device included: its lazy imports), and the ratios rank / whole.

    python benchmarks/tp_load_memory.py [--rounds 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys
import psutil, torch
import herd.checkpoint
from herd.model import build_model, preset
from herd.model.tensor_parallel import TensorParallel
build_model(preset("tiny"), device="meta")  # the meta device's lazy imports (~80 MB) count as imports
baseline = psutil.Process().memory_info().rss
directory, rank = sys.argv[1], int(sys.argv[2])
model, _ = herd.checkpoint.load(directory, tp=None if rank < 0 else TensorParallel(rank=rank, world=2))
with torch.no_grad():
    checksum = sum(p.sum().item() for p in model.parameters())  # reads each weight, no fp32 copy
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(dict(baseline=baseline, peak=peak)))
"""


def write_checkpoint(directory: Path) -> None:
    import torch

    from herd.checkpoint import meta_format
    from herd.model import ModelConfig, build_model
    from herd.tokenizer import Tokenizer, default_tokenizer_path

    config = ModelConfig(
        dim=768, n_layers=8, n_heads=12, n_kv_heads=4, multiple_of=256, ffn_dim_multiplier=None, max_seq_len=2048
    )
    model = build_model(config, dtype=torch.bfloat16)
    model.init_weights(seed=0)
    directory.mkdir(parents=True, exist_ok=True)
    meta_format.write(model, Tokenizer(default_tokenizer_path()), directory, mp=2)
    print(f"model: {config.num_params() / 1e6:.0f}M parameters, bf16, 2 model-parallel shards")


def run(directory: Path, ranks: list[int]) -> list[dict]:
    """Start one process per entry of `ranks` (-1: the whole load) at once; their measurements in order."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(directory), str(rank)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for rank in ranks]
    results = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"a measuring process failed:\n{err[-3000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, help="where to write the checkpoint (default: a temporary dir)")
    parser.add_argument("--write-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_only:
        write_checkpoint(args.dir)
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = args.dir or Path(tmp)
        start = time.perf_counter()
        # A subprocess writes it: a child inherits its parent's peak RSS (ru_maxrss) across exec.
        writer = subprocess.run([sys.executable, __file__, "--write-only", "--dir", str(root)],
                                capture_output=True, text=True, check=True)
        size = sum(f.stat().st_size for f in root.glob("consolidated.*.pth"))
        print(f"{writer.stdout.strip()}: {size / 1e6:.0f} MB written in {time.perf_counter() - start:.0f}s\n")
        rows: dict[str, list[dict]] = {"whole (1 process)": [], "tp=2 rank 0": [], "tp=2 rank 1": []}
        for _ in range(args.rounds):
            rows["whole (1 process)"] += run(root, [-1])
            for name, result in zip(("tp=2 rank 0", "tp=2 rank 1"), run(root, [0, 1]), strict=True):
                rows[name].append(result)
        medians = {name: {key: statistics.median(r[key] for r in runs) for key in ("baseline", "peak")}
                   for name, runs in rows.items()}
        whole = medians["whole (1 process)"]
        print(f"{'process':<20}{'peak RSS MB':>12}{'x whole':>9}{'above imports MB':>18}{'x whole':>9}")
        for name, m in medians.items():
            above, whole_above = m["peak"] - m["baseline"], whole["peak"] - whole["baseline"]
            print(f"{name:<20}{m['peak'] / 1e6:>12.0f}{m['peak'] / whole['peak']:>9.2f}{above / 1e6:>18.0f}"
                  f"{above / whole_above:>9.2f}")
        print(f"\nmedians of {args.rounds} rounds; the ranks run at the same time; target: a rank <= 0.6x whole")


if __name__ == "__main__":
    main()
