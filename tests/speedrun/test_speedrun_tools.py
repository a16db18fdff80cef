"""The speedrun's tool-use data (herd.speedrun.tool_data): held-out questions never asked, dialogs that round-trip
through the tool chat format and the SFT reader, and the report card's tools on/off table."""

import collections
import json
import random

import pytest

from herd.corpus import generate_corpus
from herd.corpus.math import make_problem
from herd.errors import HerdError
from herd.eval.metrics import final_answer
from herd.eval.tool_use import DEFAULT_DATE
from herd.post.batches import encode_pairs, pack_chats
from herd.post.data import ToolDialog, read_chats, read_preferences
from herd.speedrun.post_stages import corpus_tool_dialogs
from herd.speedrun.report import _tool_table
from herd.speedrun.tool_data import (
    COPY_SHARE,
    DIRECT_SHARE,
    TOOL,
    answer_text,
    expression,
    tool_dialogs,
    tool_pairs,
    sum_totals,
    sum_with_total,
)
from herd.tokenizer import parse_tool_calls
from tests.tiny import write_jsonl

DIRECT = [{"messages": [{"role": "user", "content": "Tell me a joke."}, {"role": "assistant", "content": "No."}]}]


def _question(dialog):
    return dialog["messages"][0]["content"]


def test_held_out_questions_are_never_asked():
    asked = {_question(d) for d in tool_dialogs(300, 0, held_out=set())}
    again = tool_dialogs(300, 0, held_out=asked)
    assert len(again) == 300 and not asked & {_question(d) for d in again}


def test_corpus_tool_dialogs_skip_the_corpus_eval_questions(tmp_path):
    generate_corpus(tmp_path, "micro")
    held_out = {json.loads(line)["question"] for name in ("math", "addition")
                for line in (tmp_path / "eval" / f"{name}.jsonl").read_text().splitlines()}
    dialogs = corpus_tool_dialogs(tmp_path, 400, seed=0)
    assert len(dialogs) == 400 and not held_out & {_question(d) for d in dialogs}
    direct = [d for d in dialogs if len(d["messages"]) == 2]  # offered the tool, answered without it
    assert 0.05 < len(direct) / 400 < 3 * DIRECT_SHARE
    assert all("####" not in d["messages"][1]["content"] for d in direct)  # the corpus's non-math dialogs


def test_expression_is_the_problems_arithmetic():
    rng = random.Random(3)
    for _ in range(200):
        problem = make_problem(rng)
        a, op, b = expression(problem).split()
        assert {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op] == problem.answer


def test_dialogs_round_trip_through_the_tool_format_and_the_sft_reader(tok, tmp_path):
    dialogs = tool_dialogs(40, 1, held_out=set(), direct=DIRECT)
    path = write_jsonl(tmp_path / "tools.jsonl", dialogs)
    read = read_chats(path)
    assert all(isinstance(d, ToolDialog) and d.tools == [TOOL] and d.date == DEFAULT_DATE for d in read)
    for record, dialog in zip(dialogs, read, strict=True):
        ids, mask = tok.encode_dialog_with_mask(dialog.messages, tools=dialog.tools, date=dialog.date)
        assert "Environment: ipython\nTools: wolfram_alpha\n" in tok.decode(ids)
        trained = tok.decode([i for i, m in zip(ids, mask, strict=True) if m])
        if len(record["messages"]) == 2:
            assert "<|python_tag|>" not in trained
            continue
        query, result = record["messages"][1]["tool_calls"][0]["arguments"]["query"], record["messages"][2]["content"]
        call_turn = f'<|python_tag|>wolfram_alpha.call(query="{query}")<|eom_id|>'
        assert trained == f"{call_turn}The answer is {result}.\n#### {result}<|eot_id|>"  # not the ipython result
        content, calls = parse_tool_calls(call_turn)
        assert content == "" and [(c.name, c.arguments) for c in calls] == [(TOOL, {"query": query})]
        assert final_answer(trained) == result == str(eval(query))  # noqa: S307 - a generated "a op b"
    rows = pack_chats(tok, read, seq_len=1024)
    first = tok.encode_dialog_with_mask(read[0].messages, tools=[TOOL], date=DEFAULT_DATE)[0]
    assert rows.dialogs == 40 and rows.truncated == 0 and rows.tokens[0, : len(first) - 1].tolist() == first[:-1]


def test_bare_sums_train_every_result():
    rng = random.Random(0)
    totals = sum_totals(rng)
    first, second = [next(totals) for _ in range(179)], [next(totals) for _ in range(179)]
    assert sorted(first) == sorted(second) == list(range(20, 199)) and first != second  # each once a round
    held_out = {"What is 10 + 10?", "What is 50 + 50?"}
    assert sum_with_total(20, rng, held_out) is None
    problems = [sum_with_total(100, rng, held_out) for _ in range(200)]
    assert {p.answer for p in problems} == {100} and "What is 50 + 50?" not in {p.question for p in problems}
    operands = {int(x) for p in problems for x in expression(p).split(" + ")}
    assert operands <= set(range(10, 91)) - {50} and len(operands) > 60  # 2-digit splits of 100 but the held-out
    dialogs = tool_dialogs(600, 0, held_out=set())
    results = collections.Counter(d["messages"][2]["content"] for d in dialogs
                                  if len(d["messages"]) == 4 and _question(d).startswith("What is "))
    assert all(results[str(total)] >= 1 for total in range(20, 199))  # all trained on, 3-digit ones included


def test_tool_pairs_prefer_the_copied_result_and_the_call(tok, tmp_path):
    asked = {_question(d) for d in tool_dialogs(200, 0, held_out=set())}
    records = tool_pairs(200, 1, held_out=asked)
    assert len(records) == 200 and not asked & {r["prompt"][0]["content"] for r in records}
    pairs = read_preferences(write_jsonl(tmp_path / "prefs.jsonl", records))
    copies = [p for p in pairs if len(p.prompt) == 3]
    assert 0.6 < len(copies) / len(pairs) < 0.9 and COPY_SHARE == 0.75
    encoded = encode_pairs(tok, pairs, seq_len=1024)
    for i, pair in enumerate(pairs):
        query = pair.prompt[0]["content"].removeprefix("What is ").removesuffix("?")
        right = str(eval(query))  # noqa: S307 - a generated "a + b"
        assert pair.tools == [TOOL] and pair.date == DEFAULT_DATE and final_answer(pair.rejected) != right
        if pair in copies:
            assert pair.prompt[1]["tool_calls"] == [{"name": TOOL, "arguments": {"query": query}}]
            assert pair.prompt[2]["content"] == right and pair.chosen == answer_text(right)
            expected = answer_text(right)
        else:
            assert pair.chosen["tool_calls"] == [{"name": TOOL, "arguments": {"query": query}}]
            expected = f'<|python_tag|>{TOOL}.call(query="{query}")'
        assert tok.decode([t for t, m in zip(encoded.ids[i], encoded.masks[i], strict=True) if m]) == expected


def test_read_chats_rejects_a_bad_tool_record(tmp_path):
    good = tool_dialogs(1, 0, held_out=set())[0]
    with pytest.raises(HerdError, match=r"tools.jsonl:1: date must be an ISO date such as 2024-07-23, got 'July'"):
        read_chats(write_jsonl(tmp_path / "tools.jsonl", [{**good, "date": "July"}]))
    with pytest.raises(HerdError, match=r"tools.jsonl:1: tools\[0\]: unknown built-in tool 'abacus'"):
        read_chats(write_jsonl(tmp_path / "tools.jsonl", [{**good, "tools": ["abacus"]}]))


def test_report_tool_table_puts_tools_off_beside_on():
    ev = {"scores": {"synth_addition": {"n": 60, "base": 0.0, "sft": 0.25, "sft2": 0.5, "dpo": 0.4}},
          "tools": {"synth_addition": {"metric": "exact_match", "n": 60,
                                       **{k: {"exact_match": 0.95, "called": 1.0} for k in ("sft", "sft2", "dpo")}}}}
    lines = _tool_table(ev)
    assert lines[2].startswith("| probe | n (off / on) | base (no tools) | SFT off | SFT on | SFT2")
    assert lines[4] == ("| synth_addition | 60 / 60 | 0.0% | 25.0% | 95.0% [100.0%] | 50.0% | 95.0% [100.0%] | "
                        "40.0% | 95.0% [100.0%] |")
    assert _tool_table({"scores": {}, "tools": {}}) == []
