"""Throughput of heuristic filters + MinHash dedup: herd vs datatrove, the same stages on the same corpus, one core.

Stages: Gopher quality, Gopher repetition, FineWeb quality, then MinHash (5-grams, 14 x 8) near-duplicate removal.
Prints docs/s per core (median of runs) and per CPU-second of this process, and the ratio. Needs datatrove (and
spaCy for its word splitting). datatrove runs as its README's examples do on one core (PEER_SETTINGS: a
LocalPipelineExecutor per dedup step, one worker, 14 bucket tasks for step 2; English filters split words with the
spaCy tokenizer datatrove assigns to English); its settings are printed beside the figure (its per-task log goes
to stderr), and when herd is more than 2x faster one more datatrove run is profiled (cProfile) and its top functions
printed.
Run: python benchmarks/data_throughput.py [--docs 4000] [--runs 3]
"""

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from cpu_info import cpu_line
from peer_profile import explain

from herd.data import InputConfig, OutputConfig, PipelineConfig, read_documents, run_pipeline

PEER_SETTINGS = ("LocalPipelineExecutor(workers=1), tasks 1 / 14 (bucket step) / 1 / 1, MinhashConfig(5-grams, 14 x 8, "
                 "sha1 shingle hashes), filters at their defaults (English: spaCy word tokenizer), JSONL uncompressed")
SHAKESPEARE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "text" / "tinyshakespeare.txt"


def make_corpus(path: Path, n_docs: int, seed: int = 0) -> None:
    """Windows of 20-80 lines of Shakespeare, a fifth of them copied again with a few words changed."""
    lines = [line for line in SHAKESPEARE.read_text().splitlines() if line.strip()]
    rng = random.Random(seed)
    text = ""
    with open(path, "w") as out:
        for i in range(n_docs):
            if i % 5 == 4:
                words = text.split(" ")
                for j in rng.sample(range(len(words)), max(1, len(words) // 100)):
                    words[j] = rng.choice(words)
                text = " ".join(words)
            else:
                start = rng.randrange(len(lines) - 80)
                text = "\n".join(lines[start : start + rng.randint(20, 80)])
            out.write(json.dumps({"text": text, "id": str(i)}) + "\n")


def run_herd(corpus: Path, work: Path) -> int:
    config = PipelineConfig(
        input=InputConfig(paths=[str(corpus)]),
        output=OutputConfig(dir=str(work / "out"), format="jsonl"),
        stages=["gopher_quality", "gopher_repetition", "fineweb_quality", "minhash_dedup"],
        count_tokens=False,
    )
    run_pipeline(config)
    return sum(1 for _ in read_documents([work / "out"]))


def run_datatrove(corpus: Path, work: Path) -> int:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.filters import FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    # sha1 shingle hashes: datatrove 0.10's xxhash path passes str to xxhash >= 4, which refuses it.
    mh = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8, hash_config=HashConfig(hash_fc="sha1"))
    filtered, sigs, buckets, clusters = (str(work / d) for d in ("filtered", "sigs", "buckets", "clusters"))
    steps = [
        [
            JsonlReader(str(corpus.parent), glob_pattern=corpus.name),
            GopherQualityFilter(),
            GopherRepetitionFilter(),
            FineWebQualityFilter(),
            JsonlWriter(filtered, compression=None),
            MinhashDedupSignature(sigs, config=mh),
        ],
        [MinhashDedupBuckets(sigs, buckets, config=mh)],
        [MinhashDedupCluster(buckets, clusters, config=mh)],
        [JsonlReader(filtered), MinhashDedupFilter(clusters), JsonlWriter(str(work / "out"), compression=None)],
    ]
    for i, pipeline in enumerate(steps):
        tasks = mh.num_buckets if i == 1 else 1
        LocalPipelineExecutor(pipeline, tasks=tasks, workers=1, logging_dir=str(work / f"logs{i}")).run()
    return sum(len(p.read_text().splitlines()) for p in (work / "out").glob("*.jsonl"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=4000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="herd_bench_"))
    corpus = root / "corpus" / "corpus.jsonl"
    corpus.parent.mkdir()
    make_corpus(corpus, args.docs)
    print(cpu_line())
    print(f"datatrove {version('datatrove')} settings: {PEER_SETTINGS}")
    print(f"corpus: {args.docs} documents, {corpus.stat().st_size / 1e6:.1f} MB; median of {args.runs} runs, 1 core")
    rates, cpu_rates = {}, {}
    for name, fn in (("herd", run_herd), ("datatrove", run_datatrove)):
        times, cpu_times, kept = [], [], 0
        for r in range(args.runs):
            work = root / f"{name}{r}"
            start, cpu = time.perf_counter(), time.process_time()
            kept = fn(corpus, work)
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu)
            shutil.rmtree(work)
        rates[name], cpu_rates[name] = args.docs / statistics.median(times), args.docs / statistics.median(cpu_times)
        print(f"{name:>10}: {rates[name]:8,.0f} docs/s per core, {cpu_rates[name]:8,.0f} per CPU-second  "
              f"(median {statistics.median(times):.2f} s, kept {kept})")
    ratio = rates["herd"] / rates["datatrove"]
    print(f"ratio herd / datatrove: {ratio:.2f}x wall-clock, {cpu_rates['herd'] / cpu_rates['datatrove']:.2f}x per "
          "CPU-second (target >= 1.5x)")
    explain(ratio, "datatrove", lambda: run_datatrove(corpus, root / "profiled"), kind="python")
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
