"""`herd chat` from a cold start: time to first token, and to the whole first reply, in a fresh process, beside the
steady-state decode speed; eager (`--compile off`), compiled before the first reply (`--compile on`), and the default
(`--compile auto`: eager until a background thread has compiled the step), the compiled step's cache empty (a fresh
TORCHINDUCTOR_CACHE_DIR) or warm (the previous run's). Medians of --runs processes per row.

Each run is a real `herd chat` process on a random llama3-125m saved once (herd format) and reads three user lines
at once (piped: no pause between replies for a background compile to use); the script times, from the process start,
the first byte of reply 1 (TTFT: imports, load, prefill, one token), the end of reply 1 (what a compile up front
delays: the second token waits for it), the end of reply 2 (the default's compile runs beside it where no core is
spare) and reply 3 (steady state: tok/s of its decode). The eager side is the peer the default has to beat. Run from
the repo root: `python benchmarks/chat_cold_start.py` (about 15 minutes on 2 idle cores).
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


LINES = (b"hello there", b"tell me more", b"and then?")


def chat_run(model_dir: str, compile: str, cache_dir: str, tokens: int) -> tuple[float, float, float, float, str]:
    """(seconds to reply 1's first byte, to its end, to reply 2's end, reply 3's decode tok/s, the decode-path line)
    of one process."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache_dir}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "herd.cli", "chat", "--model", model_dir, "--compile", compile, "--max-new-tokens",
         str(tokens), "--temperature", "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=env, bufsize=0,
    )
    proc.stdin.write(b"".join(line + b"\n" for line in LINES))
    proc.stdin.close()
    data, times = b"", []  # stdout: "> hello there\n<reply 1>\n> tell me more\n<reply 2>\n> and then?\n<reply 3>\n"
    while chunk := proc.stdout.read(1):
        data += chunk
        times.append(time.perf_counter() - start)
    stderr = proc.stderr.read().decode()
    if proc.wait():
        raise SystemExit(f"herd chat failed:\n{stderr}")
    first_1 = len(b"> " + LINES[0] + b"\n")
    end_1 = data.index(b"\n> " + LINES[1] + b"\n", first_1)  # reply text may hold newlines: find the echoed line
    end_2 = data.index(b"\n> " + LINES[2] + b"\n", end_1)
    first_3 = end_2 + len(b"\n> " + LINES[2] + b"\n")
    path = next(line for line in stderr.splitlines() if line.startswith("herd: decode step"))
    # reply 3: its first byte to its last, over tokens - 1 decode steps (sampled at temperature 1, the reply runs to
    # max-new-tokens unless the model samples an end token: rare for random weights)
    return times[first_1], times[end_1 - 1], times[end_2 - 1], (tokens - 1) / (times[-2] - times[first_3]), path


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
        sides = {"eager": ("off", None), "compiled first, warm": ("on", warm),
                 "default, empty cache": ("auto", None), "default, warm cache": ("auto", warm)}
        rows: dict[str, list[tuple[float, float, float, float, str]]] = {name: [] for name in sides}
        chat_run(model_dir, "on", warm, args.tokens)  # fills the warm cache
        for run in range(args.runs):  # sides alternated, so background load hits all alike
            for name, (compile, cache) in sides.items():
                cache = cache or str(Path(tmp) / f"empty-{run}-{compile}")
                rows[name].append(chat_run(model_dir, compile, cache, args.tokens))
    print(f"herd chat, {args.preset} fp32, replies of {args.tokens} tokens, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, median of {args.runs} processes each")
    print(f"{'path':22} {'TTFT s':>7} {'reply 1 s':>9} {'reply 2 s':>9} {'steady tok/s':>12}  decode-path line")
    for name, runs in rows.items():
        ttft, reply_1, reply_2, rate = (statistics.median(r[i] for r in runs) for i in range(4))
        print(f"{name:22} {ttft:7.2f} {reply_1:9.2f} {reply_2:9.2f} {rate:12.1f}  {runs[-1][4]}")


if __name__ == "__main__":
    main()
