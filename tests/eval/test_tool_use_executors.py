"""The tool executors: the calculator is exact and refuses what is not arithmetic or too large; the code
interpreter runs in the sandbox, returns what the program printed, and its limits hold."""

from __future__ import annotations

import pytest

from herd.eval.sandbox import SandboxLimits, run_program
from herd.eval.tool_executors import calculate, run_python


@pytest.mark.parametrize(("expression", "value"), [
    ("12 * (3 + 4) / 8", "10.5"),
    ("0.1 + 0.2", "0.3"),  # exact: floats would give 0.30000000000000004
    ("1/3", "1/3 (about 0.333333333333)"),
    ("123456789 * 987654321", "121932631112635269"),
    ("2 ** 100", "1267650600228229401496703205376"),
    ("(-2) ** -3", "-0.125"),
    ("7 // 2 - 7 % 3", "2"),
    ("max(3, 4.5, -1) + abs(-2.50)", "7"),
    ("1_000 * 3e2", "300000"),
    ("-(-(-5))", "-5"),
])
def test_calculator_is_exact(expression, value):
    assert calculate(expression) == value


@pytest.mark.parametrize(("expression", "says"), [
    ("__import__('os').system('id')", "is not arithmetic"),
    ("(1).__class__.__bases__", "is not arithmetic"),
    ("[x for x in range(10**9)]", "is not arithmetic"),
    ("'a' * 10**9", "is not arithmetic"),
    ("x + 1", "is not arithmetic"),
    ("9 ** 9 ** 9", "over 4096 bits"),
    ("10 ** 1300", "over 4096 bits"),
    ("(10 ** 1000) * (10 ** 1000)", "over 4096 bits"),
    ("1e999999999", "too large or too small"),
    ("2 ** 0.5", "only whole exponents"),
    ("2 ^ 10", "write **"),
    ("1 / 0", "division by zero"),
    ("0 ** -1", "division by zero"),
    ("(" * 300 + "1" + ")" * 300, "not an arithmetic expression"),
    ("1 +", "not an arithmetic expression"),
    ("1" * 5000, "over 1000 characters"),
    ("", "give an arithmetic expression"),
])
def test_calculator_refuses_with_a_message(expression, says):
    result = calculate(expression)  # the huge ones are refused before computing: no hang, no memory error
    assert result.startswith("error: ") and says in result, result


def test_sandbox_returns_what_the_program_printed():
    # Printed without a newline at the end: the sandbox flushes it before its fast exit.
    result = run_program("import sys\nprint('out', end='')\nprint('err', file=sys.stderr)\n")
    assert (result.status, result.stdout, result.stderr) == ("passed", "out", "err\n")


def test_python_tool_reports_output_errors_and_exit_codes():
    assert run_python("print(12 + 34)") == "completed\n[stdout]\n46\n[/stdout]"
    failed = run_python("print('before')\n1 / 0\n")
    assert failed.startswith("error: exit code 1\n[stdout]\nbefore\n[/stdout]\n[stderr]\nTraceback")
    assert "ZeroDivisionError: division by zero" in failed and '"<string>"' not in failed  # only the program's frames
    assert run_python("import sys\nsys.exit(3)") == "error: exit code 3"
    assert run_python("def f(:\n").startswith("error: exit code 1\n[stderr]")  # a syntax error is a result too
    assert run_python("   ") == "error: no code to run"


def test_python_tool_limits_hold():
    limits = SandboxLimits(wall_seconds=3, cpu_seconds=1, memory_bytes=1 << 30)
    assert run_python("while True: pass", limits).startswith("timeout")
    assert run_python("x = bytearray(4 << 30)", limits).startswith("error: exit code 1")  # over the memory limit
    networked = run_python("import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2)", limits)
    assert networked.startswith("error: exit code 1") and "[stderr]" in networked, networked  # no network
    host_file = run_python("print(open('/etc/hostname').read())", limits)
    assert host_file.startswith("error: exit code 1") and "FileNotFoundError" in host_file
