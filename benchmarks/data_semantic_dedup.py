"""Semantic dedup quality on planted paraphrases of GSM8K questions: MinHash-LSH vs MiniLM embeddings.

Prints pair precision/recall of herd's MinHash (5-grams, 14x8) and of semantic_dedup at several cosine thresholds.
Run: python benchmarks/data_semantic_dedup.py [--originals 400]
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
from synthetic_corpora import pair_precision_recall, paraphrase

from herd.data.embed import embed
from herd.data.minhash import near_duplicate_groups
from herd.data.semantic import semantic_groups

GSM8K = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "benchmarks" / "gsm8k" / "test.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--originals", type=int, default=400)
    args = parser.parse_args()
    questions = [json.loads(line)["question"] for line in GSM8K.read_text().splitlines()[: args.originals]]
    rng = np.random.default_rng(0)
    texts, families = list(questions), list(range(len(questions)))
    for i in range(0, len(questions), 2):
        texts.append(paraphrase(questions[i], rng))
        families.append(i)
    print(f"{len(texts)} documents, {len(texts) - len(questions)} planted paraphrases")
    start = time.perf_counter()
    p, r = pair_precision_recall(near_duplicate_groups(texts), families)
    print(f"minhash 14x8:        precision {p:.3f} recall {r:.3f}  ({time.perf_counter() - start:.2f}s)")
    start = time.perf_counter()
    vectors = embed(texts)
    print(
        f"MiniLM embeddings:   {time.perf_counter() - start:.2f}s ({len(texts) / (time.perf_counter() - start):.0f} docs/s)"
    )
    for threshold in (0.85, 0.9, 0.95):
        for exact_max_docs, how in ((len(texts), "all pairs"), (0, "k-means")):
            labels = semantic_groups(vectors, threshold, exact_max_docs=exact_max_docs, cluster_size=50)
            p, r = pair_precision_recall(labels, families)
            print(f"semantic >= {threshold:.2f} ({how}): precision {p:.3f} recall {r:.3f}")


if __name__ == "__main__":
    main()
