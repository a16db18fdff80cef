"""code_cloze: held-out code's next three lines in their true order among three reorderings."""

import json

import pytest

from herd.errors import HerdError
from herd.eval.tasks import get_task

CODE = "".join(f"def f{i}(x):\n    y = x + {i}\n    return y * {i}\n\n" for i in range(40))


def write_docs(directory, texts):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "val.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return directory


def test_choices_are_the_gold_lines_reordered(tmp_path):
    data = write_docs(tmp_path / "d", [CODE, CODE.replace("x", "z")])
    samples = get_task("code_cloze").samples(data)
    assert len(samples) == 20  # ten per document
    for sample in samples:
        gold = sample.choices[sample.gold]
        assert gold == sample.answer and sample.question + gold in CODE + CODE.replace("x", "z")
        assert len(set(sample.choices)) == 4
        assert all(sorted(c.splitlines()) == sorted(gold.splitlines()) for c in sample.choices)
        assert len(sample.question) == 300
    assert [s.choices for s in get_task("code_cloze").samples(data)] == [s.choices for s in samples]


def test_missing_or_unusable_documents_are_refused(tmp_path):
    with pytest.raises(HerdError, match="does not exist"):
        get_task("code_cloze").samples(tmp_path)
    with pytest.raises(HerdError, match="found no 3 distinct non-blank lines"):
        get_task("code_cloze").samples(write_docs(tmp_path / "short", ["x = 1\n" * 100]))
