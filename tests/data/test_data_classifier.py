"""Model-based quality: a rule teacher labels a synthetic sample, a hashed n-gram classifier learns it (held-out
accuracy and AUC vs the teacher), saves and loads, and the quality_classifier stage filters with it."""

import json

import numpy as np
import pytest
import torch
from synthetic_corpora import quality_corpus

from herd.data import InputConfig, OutputConfig, PipelineConfig, read_documents, run_pipeline
from herd.data.classifier import ClassifierOptions, TextClassifier, load_classifier
from herd.data.quality_model import QualityTrainConfig, train_quality
from herd.data.teachers import PromptTeacher, RuleTeacher
from herd.errors import HerdError
from tests.test_run_dir import crash_mid_write

pytest.importorskip("sklearn", reason="classifiers need scikit-learn")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("quality")
    texts = quality_corpus(1600, seed=0)
    (root / "in").mkdir()
    lines = [json.dumps({"text": t, "id": str(i)}) + "\n" for i, t in enumerate(texts)]
    (root / "in" / "web.jsonl").write_text("".join(lines))
    config = QualityTrainConfig(input=InputConfig(paths=[str(root / "in")]), out=str(root / "quality.npz"), sample=1500)
    return root, train_quality(config)


def test_classifier_agrees_with_teacher_on_held_out(trained):
    root, model = trained
    assert model.metrics["held_out_docs"] == 300 and model.metrics["train_docs"] == 1200
    assert model.metrics["accuracy"] >= 0.88 and model.metrics["auc"] >= 0.95, model.metrics
    texts = quality_corpus(400, seed=1)  # a fresh sample: the teacher's labels vs the classifier's
    truth = np.array(RuleTeacher()(texts)) == "good"
    assert np.mean((model.score(texts, "good") >= 0.5) == truth) >= 0.88
    loaded = load_classifier(root / "quality.npz")
    assert loaded.classes == ["bad", "good"] and loaded.metrics == model.metrics
    np.testing.assert_allclose(loaded.score(texts, "good"), model.score(texts, "good"))
    saved = json.loads((root / "quality.npz.json").read_text())
    assert saved["config"]["teacher"] == "rules" and saved["accuracy"] == model.metrics["accuracy"]


@pytest.mark.parametrize("options, kept", [({"threshold": 0.5}, None), ({"keep_top_fraction": 0.25}, 100)])
def test_quality_classifier_stage(trained, tmp_path, options, kept):
    root, model = trained
    texts = quality_corpus(400, seed=2)
    (tmp_path / "in").mkdir()
    for f in range(2):
        lines = [json.dumps({"text": t, "id": f"{f}-{i}"}) + "\n" for i, t in enumerate(texts[f::2])]
        (tmp_path / "in" / f"p{f}.jsonl").write_text("".join(lines))
    stage = {"quality_classifier": {"model_path": str(root / "quality.npz"), **options}}
    cfg = PipelineConfig(
        input=InputConfig(paths=[str(tmp_path / "in")]),
        output=OutputConfig(dir=str(tmp_path / "out"), format="jsonl"),
        stages=[stage],
        count_tokens=False,
    )
    stats = run_pipeline(cfg)
    docs = list(read_documents([tmp_path / "out"]))
    scores = [d.metadata["quality_score"] for d in docs]
    cut = min(scores)
    assert stats[-1].docs_out == len(docs) == (kept or int((model.score(texts, "good") >= 0.5).sum()))
    assert stats[-1].dropped == {"low_quality_score": 400 - len(docs)}
    assert cut >= options.get("threshold", 0.0)
    good_in = np.mean(np.array(RuleTeacher()(texts)) == "good")
    good_out = np.mean(np.array(RuleTeacher()([d.text for d in docs])) == "good")
    assert good_out >= max(0.75, 2 * good_in), (good_in, good_out)  # what stays is mostly what the teacher likes


class ToyTokenizer:
    """Words -> ids 1.. (0 is BOS), for the prompt teacher test."""

    def __init__(self):
        self.vocab = {}

    def encode(self, text, bos=True, eos=False):
        ids = [self.vocab.setdefault(w, len(self.vocab) + 1) for w in text.split()]
        return ([0] if bos else []) + ids


def test_prompt_teacher_reads_yes_vs_no_logits():
    tok = ToyTokenizer()
    yes, no, great = tok.encode(" yes", bos=False)[0], tok.encode(" no", bos=False)[0], tok.encode("great")[1]

    def model(tokens):  # says yes when the prompt holds the word "great"
        logits = torch.zeros(1, tokens.shape[1], 100)
        logits[0, -1, yes if (tokens == great).any() else no] = 3.0
        return logits

    teacher = PromptTeacher(model, tok, prompt="{text} Answer:")
    assert teacher(["a great text", "a poor text"]) == ["good", "bad"]
    assert teacher.margins(["great"]) == [3.0]


def test_a_save_that_crashes_keeps_the_old_classifier(tmp_path, monkeypatch):
    """Retraining over a classifier that stops half-way leaves the old one for the quality_classifier stage."""
    path = tmp_path / "quality.npz"
    small = ClassifierOptions(hash_bits=4)
    TextClassifier(small, ["bad", "good"], np.ones((1, 16)), np.zeros(1)).save(path)
    crash_mid_write(monkeypatch, path)
    with pytest.raises(OSError, match="simulated crash"):
        TextClassifier(small, ["bad", "good"], np.full((1, 16), 2.0), np.zeros(1)).save(path)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["quality.npz"]
    np.testing.assert_array_equal(load_classifier(path).coef, np.ones((1, 16)))


def test_training_errors_are_one_line(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "buy now"}) + "\n")
    with pytest.raises(HerdError, match="held_out must be"):
        QualityTrainConfig(input=InputConfig(paths=[str(tmp_path)]), out="x.npz", held_out=1.5)
    config = QualityTrainConfig(input=InputConfig(paths=[str(tmp_path)]), out=str(tmp_path / "q.npz"), sample=10)
    with pytest.raises(HerdError, match="every sampled text the label 'bad'"):
        train_quality(config)
    with pytest.raises(HerdError, match="needs model_path"):
        run_pipeline(
            PipelineConfig(InputConfig([str(tmp_path)]), OutputConfig(str(tmp_path / "o")), ["quality_classifier"])
        )
