"""The `herd` command end to end: real subprocesses, exit codes, one-line errors."""

import json
import os
import subprocess
import sys

import pytest


def herd(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "herd.cli", *args], input=stdin, capture_output=True, text=True, timeout=300
    )


def test_info_of_a_preset():
    result = herd("info", "llama3-8b", "--json")
    assert result.returncode == 0, result.stderr
    details = json.loads(result.stdout)
    assert details["params"] == 8030261248


def test_generate_convert_and_reload(tmp_path):
    result = herd("generate", "--model", "tiny", "--prompt", "Hello", "--max-new-tokens", "4")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    out = tmp_path / "hf"
    result = herd("convert", "--model", "tiny", "--to", "hf", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    again = herd("generate", "--model", str(out), "--prompt", "Hello", "--max-new-tokens", "4")
    assert again.returncode == 0, again.stderr
    first = herd("generate", "--model", "tiny", "--prompt", "Hello", "--max-new-tokens", "4")
    assert again.stdout == first.stdout  # same weights, greedy: same text


def test_chat_reads_piped_lines():
    result = herd("chat", "--model", "tiny", "--max-new-tokens", "3", stdin="hi\n\n/reset\nbye\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("> ") == 2


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("generate", "--model", "/no/such/dir", "--prompt", "x"), "/no/such/dir"),
        (("info", "not-a-preset-or-dir"), "not-a-preset-or-dir"),
        (("pretrain", "bogus_key=1"), "unknown config key 'bogus_key'"),
        (("guard", "--model", "tiny", "--text", "hi", "--categories", "S1,S99"), "'S99'; the taxonomy has: S1 "),
    ],
)
def test_user_errors_are_one_line_with_status_2(args, needle):
    result = herd(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("herd: error:") and needle in lines[0]


def test_a_closed_pipe_ends_quietly():
    """`herd ... | head -3`: the reader is gone before herd writes; herd stops without a BrokenPipeError traceback."""
    read, write = os.pipe()
    os.close(read)
    try:
        result = subprocess.run([sys.executable, "-m", "herd.cli", "info", "llama3-8b"], stdout=write,
                                stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write)
    assert result.stderr == "" and result.returncode == 1
