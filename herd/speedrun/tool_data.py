"""Tool-use data for the speedrun's chat model, as Llama 3's post-training taught the code interpreter: the user
asks a sum or a word problem, the assistant calls the calculator with the operands copied from the question, reads
the `ipython` result and answers from it (`The answer is N.` then `#### N`, the line the math evals read).

The tool is Llama 3.1's built-in `wolfram_alpha` (`<|python_tag|>wolfram_alpha.call(query="45 - 12")<|eom_id|>`),
answered by herd's exact calculator (herd.eval.tool_use): its call is the shortest of the three formats, so a small
model only has to pick the operation and copy two numbers; the code interpreter would also need `print(...)` and a
sandboxed process per call, and a JSON custom tool needs a long definition prompt. The results in the data are the
executor's own answers, so training and evaluation see the same `ipython` text.

Some dialogs offer the tool but need none (the corpus's knowledge, code and multilingual dialogs, answered as
before), so the tool prompt does not mean "call something". Questions held out for evaluation never appear.
"""

from __future__ import annotations

import random
import re
from collections.abc import Collection, Sequence
from typing import Any

from herd.corpus.math import Problem, addition_question, make_problem
from herd.eval.tool_use import DEFAULT_DATE, TOOLS

TOOL = "wolfram_alpha"
"""The tool the dialogs use (a name of herd.eval.tool_use.TOOLS, which the eval's tool loop offers)."""
DIRECT_SHARE = 0.15
"""Share of tool dialogs that offer the tool to a question needing none."""
_EXPRESSION = re.compile(r"\d+ [-+*] \d+")


def expression(problem: Problem) -> str:
    """The arithmetic a problem asks for, as its worked solution writes it first ("45 - 12")."""
    match = _EXPRESSION.search(problem.solution)
    if match is None:
        raise ValueError(f"no arithmetic in the solution of {problem.question!r}")
    return match.group(0)


def tool_dialog(problem: Problem) -> dict[str, Any]:
    """One dialog {"messages", "tools", "date", "domain": "tools"}: the question, the calculator call with its
    result, and the answer read off the result."""
    query = expression(problem)
    result = TOOLS[TOOL].run({"query": query})
    call = {"name": TOOL, "arguments": {"query": query}}
    return {"messages": [{"role": "user", "content": problem.question},
                         {"role": "assistant", "content": "", "tool_calls": [call]},
                         {"role": "ipython", "content": result},
                         {"role": "assistant", "content": f"The answer is {result}.\n#### {result}"}],
            "tools": [TOOL], "date": DEFAULT_DATE.isoformat(), "domain": "tools"}


def tool_dialogs(n: int, seed: int, held_out: Collection[str], direct: Sequence[dict[str, Any]] = ()) -> list[dict]:
    """`n` SFT dialogs offering the calculator: half bare sums ("What is 37 + 45?"), half the corpus's word problems
    (add, subtract, multiply), answered through the tool; a share DIRECT_SHARE of `direct` dialogs (records with
    "messages", needing no tool) offered it and answered as they are. No question in `held_out` is asked."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    while len(out) < n:
        if direct and rng.random() < DIRECT_SHARE:
            out.append({"messages": rng.choice(direct)["messages"], "tools": [TOOL], "date": DEFAULT_DATE.isoformat(),
                        "domain": "tools"})
            continue
        bare = rng.random() < 0.5
        problem = addition_question(rng.randint(10, 99), rng.randint(10, 99)) if bare else make_problem(rng)
        if problem.question not in held_out:
            out.append(tool_dialog(problem))
    return out
