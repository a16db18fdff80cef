"""`herd chat --tools` and `herd.generate(tools=...)` on a tiny model taught to call the code interpreter
(tests/eval/tool_model.py): the call runs in the sandbox, is printed with its result, and the model answers."""

from __future__ import annotations

import io
import sys

import pytest

import herd
from herd.chat import run_chat
from herd.cli import main
from tests.eval.tool_model import tool_caller  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow  # trains a tiny model once per session

CALL_AND_ANSWER = "[tool call] print(12 + 34)\n[tool result] completed\n[stdout]\n46\n[/stdout]\n46\n"


def test_chat_prints_each_call_and_result_then_the_answer(tool_caller):
    model, tok = tool_caller
    out = io.StringIO()
    run_chat(model, tok, io.StringIO("what is 12 plus 34\n"), out, tools="python", max_new_tokens=24)
    assert out.getvalue() == "> what is 12 plus 34\n" + CALL_AND_ANSWER


def test_chat_says_when_the_tool_rounds_ran_out(tool_caller):
    model, tok = tool_caller
    out = io.StringIO()
    run_chat(model, tok, io.StringIO("what is 12 plus 34\n"), out, tools=["python"], max_tool_rounds=0,
             max_new_tokens=24)
    assert out.getvalue() == ("> what is 12 plus 34\n"
                              "(stopped after 0 tool rounds: the model still called code_interpreter)\n")


def test_herd_chat_command_runs_tools(tool_caller, tmp_path, monkeypatch, capsys):
    model, tok = tool_caller
    saved = herd.save(model, tok, tmp_path / "tool_model")
    monkeypatch.setattr(sys, "stdin", io.StringIO("what is 12 plus 34\n"))
    main(["chat", "--model", str(saved), "--device", "cpu", "--tools", "python", "--max-new-tokens", "24"])
    assert capsys.readouterr().out == "> what is 12 plus 34\n" + CALL_AND_ANSWER
    with pytest.raises(SystemExit) as exited:  # before loading the model: no such directory is not the error
        main(["chat", "--model", str(tmp_path / "absent"), "--tools", "python,bash"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == "herd: error: unknown tool 'bash'; tools are python, calculator, wolfram_alpha\n"


def test_generate_with_tools_returns_the_answer_and_exposes_the_calls(tool_caller):
    model, tok = tool_caller
    calls = []
    answers = herd.generate(model, tok, ["what is 90 minus 5", "what is 12 plus 34"], tools=["python"],
                            max_new_tokens=24, on_tool_call=lambda i, exchange: calls.append((i, exchange)))
    assert answers == ["85", "46"]
    assert sorted((i, e.call.arguments["code"], e.result) for i, e in calls) == [
        (0, "print(90 - 5)", "completed\n[stdout]\n85\n[/stdout]"),
        (1, "print(12 + 34)", "completed\n[stdout]\n46\n[/stdout]")]
    assert herd.generate(model, tok, "what is 12 plus 34", tools="python", max_new_tokens=24) == "46"
    with pytest.raises(herd.HerdError, match="stop is not an option with tools"):
        herd.generate(model, tok, "what is 12 plus 34", tools="python", stop=["\n"])
