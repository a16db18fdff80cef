"""The HumanEval sandbox: canonical solutions pass; hostile programs are stopped or refused and evaluation goes on."""

import os

import pytest

from herd.eval.sandbox import SandboxLimits, run_program
from herd.eval.tasks import get_task

FAST = SandboxLimits(wall_seconds=3.0, cpu_seconds=2)


def _check(samples, task):
    failures = [s.gold for s in samples if run_program(task.program(s, s.answer), FAST).status != "passed"]
    assert failures == []


def test_first_canonical_solutions_pass(tmp_path):
    task = get_task("humaneval")
    _check(task.samples(tmp_path)[:12], task)


@pytest.mark.slow
def test_all_canonical_solutions_pass(tmp_path):
    task = get_task("humaneval")
    _check(task.samples(tmp_path), task)


def test_wrong_completion_fails(tmp_path):
    task = get_task("humaneval")
    sample = task.samples(tmp_path)[0]
    assert run_program(task.program(sample, "    return None\n"), FAST).status == "failed"


def test_chat_reply_code_block_is_used(tmp_path):
    task = get_task("humaneval")
    sample = task.samples(tmp_path)[2]  # truncate_number
    reply = f"Here you go:\n```python\n{sample.question}{sample.answer}```\nDone."
    assert run_program(task.program(sample, reply), FAST).status == "passed"


@pytest.mark.parametrize(
    "program,status",
    [
        ("while True:\n    pass\n", "timeout"),  # CPU / wall-clock limit
        ("x = bytearray(16 << 30)\n", "failed"),  # address-space limit
        ("import os\nwhile True:\n    os.fork()\n", "failed"),  # fork refused
        ("import posix\nfor _ in range(10000):\n    posix.fork()\n", None),  # raw fork bomb: limited, then killed
        ("open('big', 'wb').write(b'x' * (64 << 20))\n", "failed"),  # file-size limit
        ("open('/tmp/herd-sandbox-escape.txt', 'w').write('x')\n", "failed"),  # outside its directory
        ("import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)\n", "failed"),  # network
        ("import _socket\ns = _socket.socket()\ns.connect(('1.1.1.1', 80))\n", "failed"),  # network below socket
    ],
)
def test_hostile_programs_are_stopped(program, status):
    result = run_program(program, FAST)
    assert result.status != "passed"
    assert status is None or result.status == status
    assert not os.path.exists("/tmp/herd-sandbox-escape.txt")


def test_parent_environment_is_not_visible(monkeypatch):
    monkeypatch.setenv("HERD_TEST_SECRET", "hunter2")
    program = "import os, sys\nsys.exit(1 if 'HERD_TEST_SECRET' in os.environ else 0)\n"
    assert run_program(program, FAST).status == "passed"
    assert run_program("print('still running')\n", FAST).status == "passed"  # evaluation goes on
