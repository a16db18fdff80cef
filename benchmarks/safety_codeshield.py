"""Code Shield latency on typical snippets (the release targets ~70 ms for the common case), herd's scan beside
Meta's codeshield package scanning the same code, with their ratio.

    python benchmarks/safety_codeshield.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from herd.safety.codeshield import scan

SNIPPETS = {  # name: (language, code); "clean" ones are the common case: no prescan hit, no semgrep run
    "clean python": ("python", "def mean(xs: list[float]) -> float:\n    return sum(xs) / len(xs)\n" * 5),
    "clean c": ("c", "#include <stdio.h>\nint main(void) { puts(\"hi\"); return 0; }\n"),
    "clean javascript": ("javascript", "export function add(a, b) { return a + b; }\n" * 5),
    "regex hit (python md5)": ("python", "import hashlib\nh = hashlib.md5(b'x')\n"),
    "semgrep (python pickle)": ("python", "import pickle\nobj = pickle.loads(data)\n"),
    "semgrep (python shell=True)": ("python", "import subprocess\nsubprocess.run(cmd, shell=True)\n"),
}


def ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    try:
        from codeshield.cs import CodeShield, Language
    except ImportError:
        CodeShield = None
    print(f"{'snippet':30s} {'herd ms':>8s} {'codeshield ms':>14s} {'ratio':>6s}")
    for name, (language, code) in SNIPPETS.items():
        herd_ms = ms(lambda c=code, lang=language: scan(c, lang), args.repeat)
        if CodeShield is None:
            print(f"{name:30s} {herd_ms:8.1f} {'n/a':>14s}")
            continue
        theirs = ms(lambda c=code, lang=language: asyncio.run(CodeShield.scan_code(c, Language(lang))), args.repeat)
        print(f"{name:30s} {herd_ms:8.1f} {theirs:14.1f} {herd_ms / theirs:6.2f}")


if __name__ == "__main__":
    main()
