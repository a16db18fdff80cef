"""Domain tagging (code / math / multilingual / general rules) and token-budget mixing of sources with epochs."""

import json

import pytest

from herd.data import InputConfig, OutputConfig, PipelineConfig, read_documents, run_pipeline
from herd.data.domain import rule_domain
from herd.data.mixing import MixConfig, MixSource, run_mix
from herd.data.tokens import cached_tokenizer
from herd.errors import HerdError

SAMPLES = {
    "code": "def area(r):\n    import math\n    return math.pi * r ** 2\n\nprint(area(2))\n",
    "math": "Let $x^2 + 1 = 5$. Solve the equation for x: we get x = 2, since 2^2 + 1 = 5 holds.",
    "multilingual": "Le chat est sur la table et il dort dans la maison avec les enfants pendant que nous mangeons.",
    "general": "The river runs through the old town, and people walk along it every evening in the summer.",
}


def test_rule_domains():
    assert {name: rule_domain(text) for name, text in SAMPLES.items()} == {name: name for name in SAMPLES}
    assert rule_domain(SAMPLES["multilingual"], languages=("en", "fr")) == "general"


def write(path, texts, prefix):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t, "id": f"{prefix}{i}"}) + "\n" for i, t in enumerate(texts)))
    return path


def test_domain_stage_then_mix_by_domain(tmp_path):
    texts = [f"{SAMPLES[name]} Note {i}." for i in range(30) for name in ("general", "math", "code")]
    write(tmp_path / "raw" / "web.jsonl", texts, "w")
    cfg = PipelineConfig(InputConfig([str(tmp_path / "raw")]), OutputConfig(str(tmp_path / "clean")), ["domain"])
    cfg.count_tokens = False
    run_pipeline(cfg)
    tagged = list(read_documents([tmp_path / "clean"]))
    assert [d.metadata["domain"] for d in tagged[:3]] == ["general", "math", "code"]
    write(tmp_path / "fr" / "fr.jsonl", [SAMPLES["multilingual"]] * 2, "f")  # a tiny source: repeated for epochs
    sources = {
        "general": MixSource([str(tmp_path / "clean")], 0.5, domain="general"),
        "math": MixSource([str(tmp_path / "clean")], 0.25, domain="math"),
        "code": MixSource([str(tmp_path / "clean")], 0.17, domain="code"),
        "multilingual": MixSource([str(tmp_path / "fr")], 0.08),
    }
    budget = 2000
    config = MixConfig(sources=sources, out_dir=str(tmp_path / "mix"), token_budget=budget, shard_tokens=700)
    report = run_mix(config)
    tok = cached_tokenizer()
    docs = list(read_documents([tmp_path / "mix"]))
    assert report["shards"] == 3 and len(list((tmp_path / "mix").glob("shard-*.jsonl.zst"))) == 3
    by_source = {name: sum(len(tok.encode(d.text)) for d in docs if d.metadata["source"] == name) for name in sources}
    for name, source in sources.items():
        entry = report["sources"][name]
        assert entry["realised_tokens"] == by_source[name]
        longest = max(len(tok.encode(d.text)) for d in docs if d.metadata["source"] == name)
        assert entry["target_tokens"] <= entry["realised_tokens"] < entry["target_tokens"] + longest
        assert abs(entry["realised_share"] - source.weight) < 0.02
    assert report["sources"]["multilingual"]["epochs"] > 3  # 160 tokens from a ~40-token source
    assert all(d.metadata["domain"] == d.metadata["source"] for d in docs if d.metadata["source"] != "multilingual")
    assert "| math | 0.250 |" in (tmp_path / "mix" / "mix.md").read_text()
    again = MixConfig(sources=sources, out_dir=str(tmp_path / "mix2"), token_budget=budget, shard_tokens=700)
    run_mix(again)
    for path in sorted((tmp_path / "mix").glob("shard-*")):  # deterministic from the seed
        assert path.read_bytes() == (tmp_path / "mix2" / path.name).read_bytes()


def test_mix_config_errors(tmp_path):
    with pytest.raises(HerdError, match="no sources"):
        MixConfig(sources={}, out_dir=str(tmp_path), token_budget=10)
    with pytest.raises(HerdError, match="no documents"):
        source = MixSource([str(write(tmp_path / "a.jsonl", ["x y"], "a"))], 1.0, domain="code")
        run_mix(MixConfig({"a": source}, str(tmp_path / "o"), 10))
