"""The tool loop on a tiny model taught to call tools (tests/eval/tool_model.py): the call runs in the sandbox or
the calculator, its result goes back as an ipython turn, the model answers from there; rounds are bounded."""

from __future__ import annotations

import pytest

from herd.errors import HerdError
from herd.eval.tool_use import chat_with_tools, resolve_tools, run_call
from herd.tokenizer import ToolCall
from tests.eval.tool_model import (  # noqa: F401 - tool_caller and two_tool_caller are fixtures
    BOTH_DIALOGS, PYTHON_DIALOGS, WOLFRAM_DIALOG, tool_caller, two_tool_caller)

pytestmark = pytest.mark.slow  # trains a tiny model once per session (a few seconds on a quiet machine)


def _without_ids(messages: list[dict]) -> list[dict]:
    """The messages with each call's fresh call_id left out (they differ run to run)."""
    return [{**m, "tool_calls": [{k: v for k, v in c.items() if k != "call_id"} for c in m["tool_calls"]]}
            if "tool_calls" in m else m for m in messages]


def test_python_call_runs_in_the_sandbox_and_the_model_answers_from_its_result(tool_caller):
    model, tok = tool_caller
    pieces, calls = [], []
    [reply] = chat_with_tools(model, tok, [PYTHON_DIALOGS[0][:1]], ["python"], max_new_tokens=24,
                              on_text=lambda i, piece: pieces.append((i, piece)),
                              on_call=lambda i, exchange: calls.append((i, exchange)))
    assert reply.finished and reply.text == "46"
    [exchange] = reply.exchanges
    assert (exchange.call.name, exchange.call.arguments) == ("code_interpreter", {"code": "print(12 + 34)"})
    assert exchange.result == "completed\n[stdout]\n46\n[/stdout]"  # printed by the program in the sandbox
    assert calls == [(0, exchange)]
    # The dialog holds the model's call, the sandbox's result as an ipython turn, then the answer.
    assert _without_ids(reply.messages) == _without_ids(PYTHON_DIALOGS[0])
    assert reply.messages[1]["tool_calls"][0]["call_id"] == exchange.call.call_id
    assert "".join(p for _, p in pieces) == "46" and {i for i, _ in pieces} == {0}  # the call is not streamed


def test_dialogs_are_batched_and_each_runs_its_own_call(tool_caller):
    model, tok = tool_caller
    replies = chat_with_tools(model, tok, [PYTHON_DIALOGS[1][:1], PYTHON_DIALOGS[0][:1]], "python",
                              max_new_tokens=24)
    assert [r.text for r in replies] == ["85", "46"]
    assert [r.exchanges[0].result for r in replies] == ["completed\n[stdout]\n85\n[/stdout]",
                                                        "completed\n[stdout]\n46\n[/stdout]"]


def test_wolfram_alpha_queries_go_to_the_exact_calculator(tool_caller):
    model, tok = tool_caller
    [reply] = chat_with_tools(model, tok, [WOLFRAM_DIALOG[:1]], ["wolfram_alpha"], max_new_tokens=40)
    assert [(e.call.name, e.call.arguments, e.result) for e in reply.exchanges] == [
        ("wolfram_alpha", {"query": "7 * 8"}, "56")]
    assert reply.text == "56" and _without_ids(reply.messages) == _without_ids(WOLFRAM_DIALOG)


def test_the_rounds_are_bounded_and_the_reply_says_so(tool_caller):
    model, tok = tool_caller
    [reply] = chat_with_tools(model, tok, [PYTHON_DIALOGS[0][:1]], ["python"], max_rounds=0, max_new_tokens=24)
    assert not reply.finished and reply.exchanges == []  # the call was not run
    assert reply.text == "(stopped after 0 tool rounds: the model still called code_interpreter)"
    assert reply.messages == PYTHON_DIALOGS[0][:1]


def test_calls_that_cannot_run_become_results_the_model_reads():
    assert run_call(ToolCall("brave_search", {"query": "news"}), ["python", "calculator"]) == (
        "error: there is no tool 'brave_search'; the tools are code_interpreter, calculator")
    assert run_call(ToolCall("calculator", {"expr": "1 + 1"}), ["calculator"]) == (
        "error: calculator needs the argument 'expression' (a string)")
    assert run_call(ToolCall("calculator", {"expression": "2 ** 64"}), ["calculator"]) == "18446744073709551616"
    assert run_call(ToolCall("calculator", {"expression": "__import__('os')"}), ["calculator"]).startswith("error:")


def test_tool_names_are_checked():
    assert resolve_tools("python, calculator,python") == ["python", "calculator"]
    for bad in ("python,bash", [], ""):
        with pytest.raises(HerdError, match="unknown tool"):
            resolve_tools(bad)


def test_calculator_and_python_together_each_call_goes_to_its_tool(two_tool_caller):
    model, tok = two_tool_caller
    replies = chat_with_tools(model, tok, [d[:1] for d in BOTH_DIALOGS], "python,calculator", max_new_tokens=40)
    assert [(e.call.name, e.call.arguments, e.result) for r in replies for e in r.exchanges] == [
        ("calculator", {"expression": "7 * 8"}, "56"),  # a JSON custom call, answered by the exact calculator
        ("code_interpreter", {"code": "print(12 + 34)"}, "completed\n[stdout]\n46\n[/stdout]")]
    assert [r.text for r in replies] == ["56", "46"]
    assert [_without_ids(r.messages) for r in replies] == [_without_ids(d) for d in BOTH_DIALOGS]
