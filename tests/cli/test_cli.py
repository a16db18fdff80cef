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


def test_convert_casts_with_dtype(tmp_path):
    result = herd("convert", "--model", "tiny", "--to", "hf", "--dtype", "bfloat16", "--out", str(tmp_path / "hf"))
    assert result.returncode == 0, result.stderr
    assert json.loads(herd("info", str(tmp_path / "hf"), "--json").stdout)["dtype"] == "bfloat16"


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
        # what each error says to do exists and was not already done
        (("eval", "--model", "tiny", "--tasks", "gsm8k", "--data-dir", "/no/such/data", "--out", "/no/such/out"),
         "/no/such/data/gsm8k/test.jsonl or /no/such/data/gsm8k/test-00000-of-00001.parquet); or point --data-dir "
         "(now /no/such/data) at"),
        (("sft", "model=tiny", "out_dir=/no/such/out", "data=task:gsm8k/train@/no/such/data"),
         "/no/such/data/gsm8k/train.jsonl or /no/such/data/gsm8k/train-00000-of-00001.parquet); or name the "
         "directory holding gsm8k's files: task:gsm8k/train@DIR"),
        (("convert", "--model", "tiny", "--to", "hf", "--outtype", "q8_0", "--out", "/no/such/out"),
         "with dtype (herd convert --dtype float32|bfloat16|float16)"),
        (("pretrain", "out_dir=/no/such/out"), "data.sources is empty"),
    ],
)
def test_user_errors_are_one_line_with_status_2(args, needle):
    result = herd(*args)
    assert result.returncode == 2
    # generate, chat and eval print their memory plan before loading, before an error found later
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("memory plan per rank")]
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


def test_help_and_argument_errors_import_no_torch():
    """Each cmd_* imports what it runs, so listing the commands or misusing one answers without loading torch."""
    probe = ("import sys\nfrom herd.cli import main\nfor argv in (['--help'], ['sft', '--help'], ['generate']):\n"
             "    try:\n        main(argv)\n    except SystemExit:\n        pass\nprint('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip().splitlines()[-1] == "False", result.stderr
