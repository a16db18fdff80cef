"""`herd chat` from a cold start: time to first token, and to the whole first reply, in a fresh process, beside the
steady-state decode speed; eager (`--compile off`) vs the default (`--compile auto`), the compiled step's cache empty
(a fresh TORCHINDUCTOR_CACHE_DIR) or warm (the previous run's). Medians of --runs processes per row.

Each run is a real `herd chat` process on a random llama3-125m saved once (herd format) and reads two user lines;
the script times, from the process start, the first byte of reply 1 (TTFT: imports, load, prefill, one token), the
end of reply 1 (what the compile delays: the second token waits for it), and reply 2 (steady state: tok/s of its
decode). The eager side is the peer the default has to beat. Run from the repo root:
`python benchmarks/chat_cold_start.py` (about 10 minutes on 2 idle cores).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

import herd.checkpoint as ckpt
from herd.model import build_model, preset
from herd.tokenizer import Tokenizer, default_tokenizer_path


def chat_run(model_dir: str, compile: str, cache_dir: str, tokens: int) -> tuple[float, float, float, str]:
    """(seconds to reply 1's first byte, to its end, reply 2's decode tok/s, the decode-path line) of one process."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache_dir}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "herd.cli", "chat", "--model", model_dir, "--compile", compile, "--max-new-tokens",
         str(tokens), "--temperature", "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=env, bufsize=0,
    )
    proc.stdin.write(b"hello there\ntell me more\n")
    proc.stdin.close()
    data, times = b"", []  # stdout: "> hello there\n<reply 1>\n> tell me more\n<reply 2>\n"
    while chunk := proc.stdout.read(1):
        data += chunk
        times.append(time.perf_counter() - start)
    stderr = proc.stderr.read().decode()
    if proc.wait():
        raise SystemExit(f"herd chat failed:\n{stderr}")
    first_1 = len(b"> hello there\n")
    end_1 = data.index(b"\n> tell me more\n", first_1)  # reply text may hold newlines: find the echoed line
    first_2 = end_1 + len(b"\n> tell me more\n")
    path = next(line for line in stderr.splitlines() if line.startswith("herd: decode step"))
    # reply 2: its first byte to its last, over tokens - 1 decode steps (sampled at temperature 1, the reply runs to
    # max-new-tokens unless the model samples an end token: rare for random weights)
    return times[first_1], times[end_1 - 1], (tokens - 1) / (times[-2] - times[first_2]), path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=256, help="--max-new-tokens of each reply (herd chat's default)")
    parser.add_argument("--preset", default="llama3-125m")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(Path(tmp) / "model")
        model = build_model(preset(args.preset))
        model.init_weights(0)
        ckpt.save(model, Tokenizer(default_tokenizer_path()), model_dir)
        del model
        warm = str(Path(tmp) / "warm-cache")
        rows: dict[str, list[tuple[float, float, float, str]]] = {"eager": [], "default, empty cache": [],
                                                                    "default, warm cache": []}
        chat_run(model_dir, "auto", warm, args.tokens)  # fills the warm cache
        for run in range(args.runs):  # sides alternated, so background load hits all alike
            rows["eager"].append(chat_run(model_dir, "off", warm, args.tokens))
            rows["default, empty cache"].append(chat_run(model_dir, "auto", str(Path(tmp) / f"empty-{run}"),
                                                         args.tokens))
            rows["default, warm cache"].append(chat_run(model_dir, "auto", warm, args.tokens))
    print(f"herd chat, {args.preset} fp32, replies of {args.tokens} tokens, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, median of {args.runs} processes each")
    print(f"{'path':22} {'TTFT s':>7} {'reply 1 s':>9} {'steady tok/s':>12}  decode-path line")
    for name, runs in rows.items():
        ttft, reply, rate = (statistics.median(r[i] for r in runs) for i in range(3))
        print(f"{name:22} {ttft:7.2f} {reply:9.2f} {rate:12.1f}  {runs[-1][3]}")


if __name__ == "__main__":
    main()
