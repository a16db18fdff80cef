"""MinHash near-duplicate quality: herd's numpy MinHash-LSH vs datasketch's MinHashLSH on one planted corpus.

Same shingles (word 5-grams), same 14 bands x 8 rows; prints pair recall, precision and seconds for each.
datasketch runs as its docs recommend for many sets (PEER_SETTINGS: `MinHash.bulk`, which builds the permutations
once, `MinHashLSH.insertion_session`, which batches the inserts, and a fast C hash function in place of its default
SHA-1 in Python: xxhash, the hash herd's shingles use); when herd is more than 2x faster, one more datasketch run is
profiled (cProfile) and its top functions printed.
Run: python benchmarks/data_dedup_quality.py [--originals 5000]
"""

import argparse
import re
import time

import numpy as np
import xxhash
from cpu_info import cpu_line
from peer_profile import explain
from synthetic_corpora import pair_precision_recall, planted_corpus

from herd.data.minhash import near_duplicate_groups

BANDS, ROWS, NGRAM = 14, 8, 5
PEER_SETTINGS = ("MinHash.bulk (permutations built once; was a MinHash per document), LSH insertion_session, "
                 "hashfunc xxhash.xxh32_intdigest (was datasketch's default sha1_hash32), seed 1")


def datasketch_groups(texts: list[str]) -> np.ndarray:
    """Component labels from datasketch: each document's LSH candidates linked, then union-find."""
    from datasketch import MinHash, MinHashLSH

    shingles = []
    for text in texts:
        words = re.findall(r"\w+", text.lower())
        shingles.append([" ".join(words[j : j + NGRAM]).encode() for j in range(max(1, len(words) - NGRAM + 1))])
    hashes = MinHash.bulk(shingles, num_perm=BANDS * ROWS, seed=1, hashfunc=xxhash.xxh32_intdigest)
    lsh = MinHashLSH(num_perm=BANDS * ROWS, params=(BANDS, ROWS))
    with lsh.insertion_session() as session:
        for i, m in enumerate(hashes):
            session.insert(str(i), m)
    parent = list(range(len(texts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, m in enumerate(hashes):
        for j in map(int, lsh.query(m)):
            a, b = root(i), root(j)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return np.array([root(i) for i in range(len(texts))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--originals", type=int, default=5000)
    args = parser.parse_args()
    corpus = planted_corpus(n_originals=args.originals, copies_per_dup=2, dup_fraction=0.3, seed=0)
    print(cpu_line())
    print(f"datasketch settings: {PEER_SETTINGS}")
    print(f"corpus: {len(corpus.texts)} documents, {len(set(corpus.families))} families; {BANDS} bands x {ROWS} rows")
    results = {}
    for name, fn in (("herd", near_duplicate_groups), ("datasketch", datasketch_groups)):
        start = time.perf_counter()
        labels = fn(corpus.texts)
        seconds = time.perf_counter() - start
        precision, recall = pair_precision_recall(labels, corpus.families)
        results[name] = seconds
        print(
            f"{name:>10}: recall {recall:.4f}  precision {precision:.4f}  {seconds:6.2f} s  "
            f"({len(corpus.texts) / seconds:,.0f} docs/s)"
        )
    ratio = results["datasketch"] / results["herd"]
    print(f"speed ratio herd / datasketch: {ratio:.2f}x")
    explain(ratio, "datasketch", lambda: datasketch_groups(corpus.texts), kind="python")


if __name__ == "__main__":
    main()
