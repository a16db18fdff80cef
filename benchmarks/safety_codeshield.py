"""Code Shield latency on typical snippets (the release targets ~70 ms for the common case), herd's scan beside
Meta's codeshield package scanning the same code, with their ratio. codeshield runs as its README calls it
(`await CodeShield.scan_code(code, language)`, semgrep on PATH); its version and semgrep's are printed with the CPU.
Each side scans each snippet once untimed first (rule loading, imports, semgrep's first start), then `--repeat` times.
Where herd is more than 2x faster, one more codeshield scan is profiled (cProfile) and its top functions printed.

    python benchmarks/safety_codeshield.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import time
from importlib.metadata import version

from cpu_info import cpu_line
from peer_profile import explain

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
    """Median milliseconds of `repeat` calls after one untimed call."""
    fn()
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
    print(cpu_line())
    if CodeShield is not None:
        semgrep, semgrep_version = shutil.which("semgrep"), "not on PATH"
        if semgrep:
            semgrep_version = subprocess.run([semgrep, "--version"], capture_output=True, text=True).stdout.strip()
        print(f"codeshield {version('codeshield')}: CodeShield.scan_code(code, Language(language)); semgrep "
              f"{semgrep_version}")
    print(f"{'snippet':30s} {'herd ms':>8s} {'codeshield ms':>14s} {'herd / codeshield time':>23s}")
    for name, (language, code) in SNIPPETS.items():
        herd_ms = ms(lambda c=code, lang=language: scan(c, lang), args.repeat)
        if CodeShield is None:
            print(f"{name:30s} {herd_ms:8.1f} {'n/a':>14s}")
            continue

        def peer(c: str = code, lang: str = language) -> object:
            return asyncio.run(CodeShield.scan_code(c, Language(lang)))

        theirs = ms(peer, args.repeat)
        print(f"{name:30s} {herd_ms:8.1f} {theirs:14.1f} {herd_ms / theirs:23.2f}")
        explain(theirs / herd_ms, f"codeshield ({name})", peer, kind="python")


if __name__ == "__main__":
    main()
