"""What runs a model's tool calls: an exact calculator and the code interpreter. Each returns the text of the
`ipython` turn the model reads next; a bad call (a syntax error, a crash, a limit hit) is such a text too, never
an exception, so that the model can see what went wrong.

The calculator walks the expression's Python AST over `fractions.Fraction` by hand: sympy (a dependency) parses
with `eval` (`sympify` / `parse_expr` are documented unsafe on untrusted input) and floats are not exact. Only
numbers, + - * / // % **, unary signs, parentheses and abs/min/max pass; sizes are checked before each power,
so `9**9**9` is refused at once instead of filling memory.

The code interpreter runs the code in herd's sandbox (`herd.eval.sandbox.run_program`, with its limits) and
answers as llama-stack's code interpreter does: the process status, then `[stdout]` and `[stderr]` sections.
"""

from __future__ import annotations

import ast
import operator
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from herd.errors import HerdError
from herd.eval.sandbox import SandboxLimits, run_program

MAX_EXPRESSION_CHARS = 1000
MAX_BITS = 4096
"""The largest numerator or denominator the calculator computes (about 1233 decimal digits)."""
PYTHON_LIMITS = SandboxLimits(wall_seconds=10.0, cpu_seconds=10, memory_bytes=1 << 30)

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS = {"abs": abs, "min": min, "max": max}


class _Refused(Exception):
    """An expression the calculator will not compute; its message is the tool result."""


def calculate(expression: str) -> str:
    """The exact value of an arithmetic expression (`"12 * (3 + 4) / 8"` -> `"10.5"`), or `"error: ..."`."""
    if not isinstance(expression, str) or not expression.strip():
        return "error: give an arithmetic expression such as 12 * (3 + 4)"
    if len(expression) > MAX_EXPRESSION_CHARS:
        return f"error: the expression is over {MAX_EXPRESSION_CHARS} characters"
    try:
        tree = ast.parse(expression.strip(), mode="eval")
        return _format(_value(tree.body, expression.strip()))
    except (SyntaxError, ValueError) as error:  # ValueError: a literal over Python's digit limit
        return f"error: not an arithmetic expression ({error.msg if isinstance(error, SyntaxError) else error})"
    except (RecursionError, MemoryError):
        return "error: the expression is nested too deeply"
    except ZeroDivisionError:
        return "error: division by zero"
    except _Refused as refused:
        return f"error: {refused}"


def _value(node: ast.AST, source: str) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _checked(_literal(node, source))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _checked(_BINARY[type(node.op)](_value(node.left, source), _value(node.right, source)))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        return _power(_value(node.left, source), _value(node.right, source))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitXor):
        raise _Refused("^ is not a power here: write ** (2 ** 10)")
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_value(node.operand, source))
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS
            and node.args and not node.keywords and (node.func.id != "abs" or len(node.args) == 1)):
        return _FUNCTIONS[node.func.id](*(_value(arg, source) for arg in node.args))
    what = ast.get_source_segment(source, node) or type(node).__name__
    raise _Refused(f"{what[:40]!r} is not arithmetic (numbers, + - * / // % **, parentheses, abs, min, max)")


def _literal(node: ast.Constant, source: str) -> Fraction:
    """A number as written: `0.1` is exactly 1/10, not the float nearest to it."""
    if isinstance(node.value, int):
        return Fraction(node.value)
    try:
        written = Decimal((ast.get_source_segment(source, node) or repr(node.value)).replace("_", ""))
    except InvalidOperation:
        written = Decimal(repr(node.value))
    if not written.is_finite() or abs(written.adjusted()) > MAX_BITS // 3:
        raise _Refused(f"the number {written:.3e} is too large or too small")
    return Fraction(written)


def _power(base: Fraction, exponent: Fraction) -> Fraction:
    if exponent.denominator != 1:
        raise _Refused("only whole exponents: the calculator is exact, and roots are rarely rational")
    if base == 0 and exponent < 0:
        raise ZeroDivisionError
    size = max(base.numerator.bit_length(), base.denominator.bit_length()) - 1
    if base not in (0, 1, -1) and abs(exponent) * max(size, 1) > MAX_BITS:
        raise _Refused(f"the result of the power is over {MAX_BITS} bits")
    return _checked(base ** int(exponent))


def _checked(value: Fraction) -> Fraction:
    if max(value.numerator.bit_length(), value.denominator.bit_length()) > MAX_BITS:
        raise _Refused(f"a result is over {MAX_BITS} bits")
    return value


def _format(value: Fraction) -> str:
    """An integer, an exact decimal where one exists, else the fraction and a 12-digit decimal."""
    if value.denominator == 1:
        return str(value.numerator)
    twos = (value.denominator & -value.denominator).bit_length() - 1
    rest, fives = value.denominator >> twos, 0
    while rest % 5 == 0:
        rest, fives = rest // 5, fives + 1
    if rest == 1:
        places = max(twos, fives)
        digits = str(abs(value.numerator) * 10**places // value.denominator).rjust(places + 1, "0")
        return ("-" if value < 0 else "") + f"{digits[:-places]}.{digits[-places:]}"
    return f"{value.numerator}/{value.denominator} (about {float(value):.12g})"


def run_python(code: str, limits: SandboxLimits = PYTHON_LIMITS) -> str:
    """Run `code` in the sandbox: its status (completed, error with the exit code, timeout), then what it printed."""
    if not isinstance(code, str) or not code.strip():
        return "error: no code to run"
    try:
        result = run_program(code, limits)
    except HerdError as error:  # no sandbox on this host: the model and the user both read why
        return f"error: {error}"
    status = {"passed": "completed", "timeout": f"timeout: over {limits.wall_seconds:g} s or its CPU limit"}.get(
        result.status, f"error: exit code {result.returncode}"
    )
    pieces = [status]
    stderr = "\n".join(line for line in result.stderr.splitlines() if not line.startswith('  File "<string>"'))
    for name, text in (("stdout", result.stdout), ("stderr", stderr)):
        if text.strip():
            pieces += [f"[{name}]", text.rstrip("\n"), f"[/{name}]"]
    return "\n".join(pieces)
