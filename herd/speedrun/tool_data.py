"""Tool-use data for the speedrun's chat model, as Llama 3's post-training taught the code interpreter: the user
asks a sum or a word problem, the assistant calls the calculator with the operands copied from the question, reads
the `ipython` result and answers from it (`The answer is N.` then `#### N`, the line the math evals read).

The bare sums take their results from shuffled rounds of every result 20..198 (`sum_totals`), then draw the
operands, so each result, which the model copies from the `ipython` turn into its answer, is trained on: drawn as
operands uniformly, a sum's result is triangular and most results above 150 never appear (the tiny runs' tools-on
misses were all such copies, of results never trained on; even drawn uniformly, a quarter of them would not appear).

The tool is Llama 3.1's built-in `wolfram_alpha` (`<|python_tag|>wolfram_alpha.call(query="45 - 12")<|eom_id|>`),
answered by herd's exact calculator (herd.eval.tool_use): its call is the shortest of the three formats, so a small
model only has to pick the operation and copy two numbers; the code interpreter would also need `print(...)` and a
sandboxed process per call, and a JSON custom tool needs a long definition prompt. The results in the data are the
executor's own answers, so training and evaluation see the same `ipython` text.

DPO's tool pairs (`tool_pairs`) sharpen both steps: after the call, the answer that copies the result beats one
that does not (a near miss or another sum's result, as the failed copies were); before it, calling beats a guess.

Some dialogs offer the tool but need none (the corpus's knowledge, code and multilingual dialogs, answered as
before), so the tool prompt does not mean "call something". Questions held out for evaluation never appear.
"""

from __future__ import annotations

import random
import re
from collections.abc import Collection, Iterator, Sequence
from typing import Any

from herd.corpus.math import Problem, addition_question, make_problem
from herd.eval.tool_use import DEFAULT_DATE, TOOLS

TOOL = "wolfram_alpha"
"""The tool the dialogs use (a name of herd.eval.tool_use.TOOLS, which the eval's tool loop offers)."""
DIRECT_SHARE = 0.15
"""Share of tool dialogs that offer the tool to a question needing none."""
COPY_SHARE = 0.75
"""Share of tool pairs that compare answers after the call (the rest compare calling with guessing)."""
_EXPRESSION = re.compile(r"\d+ [-+*] \d+")


def expression(problem: Problem) -> str:
    """The arithmetic a problem asks for, as its worked solution writes it first ("45 - 12")."""
    match = _EXPRESSION.search(problem.solution)
    if match is None:
        raise ValueError(f"no arithmetic in the solution of {problem.question!r}")
    return match.group(0)


def sum_totals(rng: random.Random) -> Iterator[int]:
    """Endless sums of two 2-digit numbers, 20..198, each once in every shuffled round."""
    while True:
        totals = list(range(20, 199))
        rng.shuffle(totals)
        yield from totals


def sum_with_total(total: int, rng: random.Random, held_out: Collection[str]) -> Problem | None:
    """"What is a + b?" with 2-digit operands adding up to `total` and not in `held_out` (None if every split is)."""
    splits = list(range(max(10, total - 99), min(99, total - 10) + 1))
    rng.shuffle(splits)
    return next((p for p in (addition_question(a, total - a) for a in splits) if p.question not in held_out), None)


def tool_dialog(problem: Problem) -> dict[str, Any]:
    """One dialog {"messages", "tools", "date", "domain": "tools"}: the question, the calculator call with its
    result, and the answer read off the result."""
    query = expression(problem)
    result = TOOLS[TOOL].run({"query": query})
    call = {"name": TOOL, "arguments": {"query": query}}
    return {"messages": [{"role": "user", "content": problem.question},
                         {"role": "assistant", "content": "", "tool_calls": [call]},
                         {"role": "ipython", "content": result},
                         {"role": "assistant", "content": answer_text(result)}],
            "tools": [TOOL], "date": DEFAULT_DATE.isoformat(), "domain": "tools"}


def answer_text(result: str | int) -> str:
    """The answer turn that reads `result` off the tool: "The answer is N." and the `#### N` line."""
    return f"The answer is {result}.\n#### {result}"


def wrong_result(right: int, rng: random.Random) -> int:
    """A positive result other than `right`: half near misses (+-1, 2, 10, 20), half another sum's (20..198)."""
    while True:
        wrong = right + rng.choice((-20, -10, -2, -1, 1, 2, 10, 20)) if rng.random() < 0.5 else rng.randint(20, 198)
        if wrong != right and wrong > 0:
            return wrong


def tool_pairs(n: int, seed: int, held_out: Collection[str]) -> list[dict[str, Any]]:
    """`n` DPO records {"prompt", "chosen", "rejected", "tools", "date", "domain": "tools"} on bare sums (results
    from `sum_totals`, none in `held_out`): a share COPY_SHARE after the call and its result, the answer copying
    the result chosen over one with a `wrong_result`; the rest on the question alone, the calculator call chosen
    over that wrong answer."""
    rng = random.Random(seed)
    totals = sum_totals(rng)
    out: list[dict[str, Any]] = []
    while len(out) < n:
        problem = sum_with_total(next(totals), rng, held_out)
        if problem is None:
            continue
        dialog = tool_dialog(problem)
        messages = dialog["messages"]
        wrong = {"role": "assistant", "content": answer_text(wrong_result(problem.answer, rng))}
        cut = 3 if rng.random() < COPY_SHARE else 1  # after the ipython result, or before the call
        out.append({"prompt": messages[:cut], "chosen": [messages[cut]], "rejected": [wrong],
                    "tools": dialog["tools"], "date": dialog["date"], "domain": "tools"})
    return out


def tool_dialogs(n: int, seed: int, held_out: Collection[str], direct: Sequence[dict[str, Any]] = ()) -> list[dict]:
    """`n` SFT dialogs offering the calculator: half bare sums ("What is 37 + 45?", results from `sum_totals`), half
    the corpus's word problems (add, subtract, multiply), answered through the tool; a share DIRECT_SHARE of
    `direct` dialogs (records with "messages", needing no tool) offered it and answered as they are. No question in
    `held_out` is asked."""
    rng = random.Random(seed)
    totals = sum_totals(rng)
    out: list[dict[str, Any]] = []
    while len(out) < n:
        if direct and rng.random() < DIRECT_SHARE:
            out.append({"messages": rng.choice(direct)["messages"], "tools": [TOOL], "date": DEFAULT_DATE.isoformat(),
                        "domain": "tools"})
            continue
        problem = sum_with_total(next(totals), rng, held_out) if rng.random() < 0.5 else make_problem(rng)
        if problem is not None and problem.question not in held_out:
            out.append(tool_dialog(problem))
    return out
