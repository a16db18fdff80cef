"""Peak memory of `herd.checkpoint.load` per checkpoint format, as a multiple of the checkpoint's size.

Writes a ~270M-parameter fp32 model (~1.1 GB) as herd, HF and Meta checkpoints (and Meta as two model-parallel
shards), loads each in a fresh subprocess and prints (peak RSS - RSS after `import torch`) / checkpoint bytes,
right after `load` and after every weight has been read once. Target: <= 1.3.

    python benchmarks/load_memory.py [--dir DIR]

The checkpoints are written by a subprocess too: a child inherits its parent's peak RSS (ru_maxrss) across exec.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import psutil, torch
baseline = psutil.Process().memory_info().rss
import herd.checkpoint
start = time.perf_counter()
model, tok = herd.checkpoint.load(sys.argv[1], dtype=sys.argv[2] if len(sys.argv) > 2 else None)
seconds = time.perf_counter() - start
after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
with torch.no_grad():
    checksum = sum(p.float().sum().item() for p in model.parameters())
after_touch = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
print(json.dumps(dict(baseline=baseline, after_load=after_load, after_touch=after_touch, seconds=seconds,
                      dtype=dtype)))
"""


def write_checkpoints(root: Path) -> dict[str, Path]:
    import torch

    import herd.checkpoint as ckpt
    from herd.model.tensor_parallel import SHARD_DIMS
    from herd.model import ModelConfig, build_model
    from herd.tokenizer import Tokenizer, default_tokenizer_path

    config = ModelConfig(
        dim=768, n_layers=12, n_heads=12, n_kv_heads=4, multiple_of=256, ffn_dim_multiplier=None, max_seq_len=2048
    )
    model = build_model(config)
    model.init_weights(seed=0)
    tok = Tokenizer(default_tokenizer_path())
    dirs = {fmt: ckpt.save(model, tok, root / fmt, format=fmt) for fmt in ("herd", "hf", "meta")}
    sharded = root / "meta-2-shards"
    ckpt.save(model, tok, sharded, format="meta")
    state = torch.load(sharded / "consolidated.00.pth", weights_only=True)
    for rank in range(2):
        shard = {}
        for name, tensor in state.items():
            parts = name.split(".")
            dim = SHARD_DIMS[".".join(parts[2:-1] if parts[0] == "layers" else parts[:-1])]
            shard[name] = tensor.clone() if dim is None else tensor.chunk(2, dim=dim)[rank].clone()
        torch.save(shard, sharded / f"consolidated.{rank:02d}.pth")
    dirs["meta-2-shards"] = sharded
    print(f"model: {config.num_params() / 1e6:.0f}M parameters, fp32")
    return dirs


def weight_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.suffix in (".safetensors", ".pth"))


def measure(directory: Path, dtype: str | None) -> dict:
    args = [sys.executable, "-c", CHILD, str(directory)] + ([dtype] if dtype else [])
    result = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="where to write the checkpoints (default: a temporary dir)")
    parser.add_argument("--write-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_only:
        print(json.dumps({name: str(path) for name, path in write_checkpoints(args.dir).items()}))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = args.dir or Path(tmp)
        start = time.perf_counter()
        writer = subprocess.run(
            [sys.executable, __file__, "--write-only", "--dir", str(root)], capture_output=True, text=True, check=True
        )
        lines = writer.stdout.strip().splitlines()
        dirs = {name: Path(path) for name, path in json.loads(lines[-1]).items()}
        print(f"{lines[0]}; wrote the checkpoints in {time.perf_counter() - start:.0f}s under {root}\n")
        runs = [(name, directory, None) for name, directory in dirs.items()]
        runs.append(("hf -> bfloat16", dirs["hf"], "bfloat16"))
        print(f"{'format':<16}{'ckpt GB':>9}{'load s':>8}{'dtype':>10}{'after load':>12}{'weights read':>14}")
        for name, directory, dtype in runs:
            size = weight_bytes(directory)
            m = measure(directory, dtype)
            loaded, read = ((m[key] - m["baseline"]) / size for key in ("after_load", "after_touch"))
            print(f"{name:<16}{size / 1e9:>9.2f}{m['seconds']:>8.2f}{m['dtype']:>10}{loaded:>12.2f}{read:>14.2f}")
        print("\nratio = (peak RSS - RSS after `import torch`) / checkpoint bytes; target <= 1.3")


if __name__ == "__main__":
    main()
