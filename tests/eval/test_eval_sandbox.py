"""The HumanEval sandbox: canonical solutions pass; exits cannot pass; hostile programs are stopped or refused and
evaluation goes on; without a box it refuses unless told otherwise. (Escapes: test_sandbox_escapes.py.)"""

import os

import pytest

from herd.errors import HerdError
from herd.eval import sandbox
from herd.eval.sandbox import SandboxLimits, run_program
from herd.eval.tasks import get_task

FAST = SandboxLimits(wall_seconds=3.0, cpu_seconds=2)
# a normal user's machine may allow no box (the error says what to install); as root (CI, containers) one must work
pytestmark = pytest.mark.skipif(os.getuid() != 0 and all(sandbox._failure(r) for r in ("bwrap", "unshare")),
                                reason="no sandbox works here: install bubblewrap and allow user namespaces")


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
        ("import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)\n", "failed"),  # network
        ("import _socket\ns = _socket.socket()\ns.connect(('1.1.1.1', 80))\n", "failed"),  # network below socket
    ],
)
def test_hostile_programs_are_stopped(program, status):
    result = run_program(program, FAST)
    assert result.status != "passed"
    assert status is None or result.status == status


def test_parent_environment_is_not_visible(monkeypatch):
    monkeypatch.setenv("HERD_TEST_SECRET", "hunter2")
    assert run_program("import os\nassert 'HERD_TEST_SECRET' not in os.environ\n", FAST).status == "passed"
    assert run_program("print('still running')\n", FAST).status == "passed"  # evaluation goes on


@pytest.mark.parametrize("escape", [
    "import os\nos._exit(0)\n", "import sys\nsys.exit(0)\n", "raise SystemExit(0)\n", "exit()\n",
    "import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n", "print('passed')\nimport os\nos._exit(0)\n",
])
def test_exiting_before_the_end_fails(tmp_path, escape):
    """An exit with status 0 before check() returns is no pass: only the end of the code echoes the marker."""
    task = get_task("humaneval")
    sample = task.samples(tmp_path)[2]  # truncate_number
    completion = "    " + escape.replace("\n", "\n    ")
    assert task.score(sample, completion)[0] == "failed"
    assert task.score(sample, sample.answer)[0] == "passed"


def test_without_a_box_it_refuses_unless_told(monkeypatch):
    monkeypatch.setattr(sandbox, "_failure", lambda route: "not installed")
    with pytest.raises(HerdError, match="bwrap: not installed; unshare: not installed.*apt-get install bubblewrap.*"
                                        "HERD_SANDBOX=none"):
        run_program("pass\n", FAST)
    monkeypatch.setenv("HERD_SANDBOX", "unshare")
    with pytest.raises(HerdError, match=r"\(unshare: not installed\)"):
        run_program("pass\n", FAST)
    monkeypatch.setenv("HERD_SANDBOX", "docker")
    with pytest.raises(HerdError, match="use auto, bwrap, unshare or none"):
        run_program("pass\n", FAST)
    monkeypatch.setenv("HERD_SANDBOX", "none")
    assert run_program("pass\n", FAST).status == "passed"
