"""Deduplication: exact, URL (most recent kept), ccNet line dedup, and MinHash-LSH on planted near-duplicates."""

import json

import numpy as np
from synthetic_corpora import pair_precision_recall, planted_corpus

from herd.data import Document, InputConfig, OutputConfig, PipelineConfig, read_documents, run_pipeline
from herd.data.dedup import ExactDedup, LineDedup, UrlDedup
from herd.data.minhash import MinHasher, duplicate_components, near_duplicate_groups
from herd.data.stage import StageContext
from herd.data.stats import StageStats


def docs(*texts, **metadata_lists):
    return [
        Document(text=t, id=str(i), metadata={k: v[i] for k, v in metadata_lists.items()}) for i, t in enumerate(texts)
    ]


def run_global(stage, shards):
    """Run a global stage the way the executor does: index every shard, decide, then process each shard."""
    decisions = stage.decide([stage.index(iter(shard)) for shard in shards])
    kept, stats = [], StageStats(stage.name)
    for s, shard in enumerate(shards):
        stage.decision = decisions[s]
        kept.append([d.id for d in stage.process(iter(shard), StageContext(stats=stats, shard=s))])
    return kept, stats


def test_exact_dedup_keeps_first_across_shards():
    a = docs("Hello, World!", "unique one", "hello world")
    b = docs("HELLO   world", "another")
    kept, stats = run_global(ExactDedup(), [a, b])
    assert kept == [["0", "1"], ["1"]]
    assert stats.dropped == {"exact_duplicate": 2}
    kept, _ = run_global(ExactDedup(normalize=False), [a, b])
    assert kept == [["0", "1", "2"], ["0", "1"]]


def test_url_dedup_keeps_most_recent():
    a = docs(
        "v1",
        "v3",
        "no url",
        "other",
        url=["http://a.com/x", "http://A.com/x/", None, "http://b"],
        date=["2020-01-01", "2023-05-01", None, None],
    )
    b = docs("v2", "other again", url=["http://a.com/x", "http://b"], date=["2021-01-01", "2019-01-01"])
    kept, stats = run_global(UrlDedup(), [a, b])
    assert kept == [["1", "2"], ["1"]]  # newest a.com/x; for http://b the dated copy beats the undated one
    assert stats.dropped == {"url_duplicate": 3}


def test_line_dedup_removes_lines_repeated_in_bucket():
    boiler = "Subscribe to our newsletter for 10 dollars"
    names = ["alpha", "beta", "gamma", "delta"]  # digits are normalised to 0, names are not
    texts = [
        f"Story {n} begins here.\n{boiler.replace('10', str(i + 10))}\nThe end of {n}." for i, n in enumerate(names)
    ]
    texts.append(boiler)
    stage, stats = LineDedup(bucket_size=10, max_repeats=2), StageStats("line_dedup")
    out = list(stage.process(iter(docs(*texts)), StageContext(stats=stats)))
    assert [d.text for d in out] == [f"Story {n} begins here.\nThe end of {n}." for n in names]
    assert stats.dropped == {"all_lines_duplicated": 1} and stats.modified == 4
    # Buckets are independent: with 2 documents per bucket no line repeats more than twice.
    small = list(LineDedup(bucket_size=2, max_repeats=2).process(iter(docs(*texts)), StageContext(StageStats("l"))))
    assert len(small) == 5 and small[0].text == texts[0]


def test_minhash_signature_estimates_jaccard():
    hasher = MinHasher(ngram=1, num_perm=512, seed=3)
    a = " ".join(f"w{i}" for i in range(100))
    b = " ".join(f"w{i}" for i in range(30, 130))  # 70 shared of 130: Jaccard 0.538
    agreement = float(np.mean(hasher.signature(a) == hasher.signature(b)))
    assert abs(agreement - 70 / 130) < 0.07
    assert np.array_equal(MinHasher(seed=3).signature(a), MinHasher(seed=3).signature(a.upper()))


def test_duplicate_components_are_transitive_and_keep_smallest():
    keys = np.array([[1, 10], [2, 20], [1, 30], [3, 30], [4, 40]], dtype=np.uint64)  # 0-2 by band 0, 2-3 by band 1
    assert duplicate_components(keys).tolist() == [0, 1, 0, 0, 4]


def test_minhash_planted_near_duplicates_recall_and_precision():
    corpus = planted_corpus(n_originals=1500, copies_per_dup=2, dup_fraction=0.3, seed=7)
    precision, recall = pair_precision_recall(near_duplicate_groups(corpus.texts), corpus.families)
    assert recall >= 0.95 and precision >= 0.99, (precision, recall)


def test_minhash_in_pipeline_keeps_one_per_family(tmp_path):
    corpus = planted_corpus(n_originals=300, dup_fraction=0.5, seed=11)
    root = tmp_path / "in"
    root.mkdir()
    for f in range(3):
        with open(root / f"part{f}.jsonl", "w") as out:
            out.writelines(
                json.dumps({"text": corpus.texts[i], "id": str(i)}) + "\n" for i in range(f, len(corpus.texts), 3)
            )
    config = PipelineConfig(
        input=InputConfig(paths=[str(root)]),
        output=OutputConfig(dir=str(tmp_path / "out")),
        stages=[{"minhash_dedup": {"ngram": 5, "bands": 14, "rows": 8}}],
        count_tokens=False,
    )
    stats = run_pipeline(config)
    kept = [int(d.id) for d in read_documents([tmp_path / "out"])]
    families = [corpus.families[i] for i in kept]
    assert len(set(families)) == len(families) == 300  # every family once, every original family kept
    assert stats[-1].dropped == {"near_duplicate": len(corpus.texts) - 300}
