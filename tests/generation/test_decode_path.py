"""Which decode path runs by default (herd.generate, `herd generate | chat`), the line that says so, and the compiled
step's kernels served from inductor's on-disk cache in a later process."""

import importlib
import json
import os
import subprocess
import sys

from pathlib import Path

import pytest

import herd
from herd.generation import decode_step, generate_tokens
from herd.generation.decode_step import choose_decode_path, describe_decode_path
from tests.generation.test_generation import random_model


@pytest.fixture()
def model():
    return random_model()


def test_explicit_choices_win(model, monkeypatch):
    monkeypatch.setattr(decode_step, "MIN_COMPILE_WORK", 0)
    assert choose_decode_path(model, True, 1) == (True, "compiled (asked for)")
    assert choose_decode_path(model, False, 10**6) == (False, "eager (asked for)")


def test_auto_compiles_where_the_work_pays(model, monkeypatch, tmp_path):
    monkeypatch.delenv("HERD_CPU_PLAIN", raising=False)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))  # no kernels cached: the cold threshold
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    tokens = int(decode_step.MIN_COMPILE_WORK_COLD // nbytes)
    compiled, why = choose_decode_path(model, None, tokens + 1)
    assert compiled and why == "compiled (inductor, herd's CPU decode kernels)"
    compiled, why = choose_decode_path(model, None, tokens - 1)
    assert not compiled and "too few to pay for a compile" in why
    assert choose_decode_path(model, None, tokens + 1, rows=2) == (
        False, "eager (2 prompts: on CPUs the compiled step is faster for one)")


def test_auto_is_eager_on_the_plain_path_and_without_a_compiler(model, monkeypatch):
    monkeypatch.setattr(decode_step, "MIN_COMPILE_WORK_COLD", 0)
    monkeypatch.setenv("HERD_CPU_PLAIN", "1")
    assert choose_decode_path(model, None, 64) == (False, "eager (HERD_CPU_PLAIN=1)")
    assert "--compile on to compile" in describe_decode_path(model, None, 64)
    monkeypatch.setenv("HERD_CPU_PLAIN", "0")
    monkeypatch.setenv("CXX", "/no/such/g++")
    assert choose_decode_path(model, None, 64) == (
        False, "eager (no C++ compiler for inductor's CPU kernels: install g++)")
    monkeypatch.delenv("CXX")
    line = describe_decode_path(model, None, 64)
    assert line.startswith("herd: decode step compiled") and "kernels cached in " in line and "--compile off" in line


def test_cli_prints_the_path_on_stderr():
    def run(*flags, **env):
        return subprocess.run(
            [sys.executable, "-m", "herd.cli", "generate", "--model", "tiny", "--prompt", "Hi", "--max-new-tokens", "2",
             *flags], capture_output=True, text=True, timeout=300, env={**os.environ, **env},
        )

    result = run("--compile", "off")
    assert result.returncode == 0, result.stderr
    plan, path = result.stderr.splitlines()[:2]  # the memory plan comes before loading
    assert plan.startswith("memory plan per rank at tp 1") and path.startswith("herd: decode step eager (asked for)")
    assert "herd:" not in result.stdout  # the generated text stays clean
    assert "herd: decode step eager (HERD_CPU_PLAIN=1)" in run(HERD_CPU_PLAIN="1").stderr


@pytest.mark.slow
def test_auto_compiled_greedy_tokens_equal_eager(model, tok, monkeypatch):
    """herd.generate's default (auto) takes the compiled step once the work pays; same greedy text as eager."""
    monkeypatch.delenv("HERD_CPU_PLAIN", raising=False)
    monkeypatch.setattr(decode_step, "MIN_COMPILE_WORK_COLD", 0)
    paths = []
    module = importlib.import_module("herd.generation.generate")  # the package's `generate` is the function
    make = module.make_decode_step
    monkeypatch.setattr(module, "make_decode_step", lambda *a: paths.append(a[2]) or make(*a))
    auto = herd.generate(model, tok, "what is the sky", max_new_tokens=12)
    eager = herd.generate(model, tok, "what is the sky", max_new_tokens=12, compile=False)
    assert paths == [True, False]
    assert auto == eager
    assert generate_tokens(model, [[1, 2, 3]], max_new_tokens=6, compile=None)[0].tokens == \
        generate_tokens(model, [[1, 2, 3]], max_new_tokens=6)[0].tokens


COMPILE_IN_A_PROCESS = """
import json, torch
from torch._dynamo.utils import counters
from tests.generation.test_generation import random_model
from herd.generation import generate_tokens
generate_tokens(random_model(), [[1, 2, 3]], max_new_tokens=4, compile=True)
print(json.dumps(dict(counters["inductor"])))
"""


@pytest.mark.slow
def test_a_second_process_loads_the_compiled_decode_step_from_the_cache(tmp_path):
    """Inductor's FX-graph cache serves herd's decode step (with its CPU decompositions) to a later process."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path), "HERD_CPU_PLAIN": "0"}
    runs = []
    for _ in range(2):
        result = subprocess.run([sys.executable, "-c", COMPILE_IN_A_PROCESS], capture_output=True, text=True,
                                timeout=600, env=env, cwd=Path(__file__).parents[2])
        assert result.returncode == 0, result.stderr
        runs.append(json.loads(result.stdout.splitlines()[-1]))
    assert runs[0].get("fxgraph_cache_miss") == 1 and not runs[0].get("fxgraph_cache_bypass")
    assert runs[1].get("fxgraph_cache_hit") == 1 and not runs[1].get("fxgraph_cache_miss")


@pytest.mark.parametrize("plain", [False, True], ids=["tuned", "plain"])
def test_the_eager_one_row_step_runs_the_fp32_head_through_onednn_where_the_cpu_can(model, monkeypatch, plain):
    """The eager step's head: oneDNN's matmul for one fp32 row where the CPU runs it (not on the plain path, not for
    bf16 nor several rows); the logits of F.linear on the plain weight."""
    import torch
    import torch.nn.functional as F

    from herd.model import KVCache, cpu_tuning
    from herd.model.cpu_tuning import PLAIN_ENV, cpu_supports

    monkeypatch.setenv(PLAIN_ENV, "1" if plain else "0")
    calls, step_calls = [], []
    onednn = cpu_tuning.prepacked_matmul
    monkeypatch.setattr(cpu_tuning, "prepacked_matmul", lambda x, w: calls.append(x.shape) or onednn(x, w))
    for m, rows in ((model, 1), (model, 2), (random_model().to(torch.bfloat16), 1)):
        prompts = torch.arange(1, 1 + 4 * rows).view(rows, 4)
        with torch.inference_mode():
            caches = [KVCache.allocate(m.config, rows, 8, dtype=m.output.weight.dtype, device="cpu") for _ in "ab"]
            for cache in caches:
                m(prompts, cache=cache)
            calls.clear()
            logits = decode_step.make_decode_step(m, caches[0], False)(prompts[:, -1:])
            step_calls += calls
            expected = F.linear(m(prompts[:, -1:], cache=caches[1], head=False)[:, -1], m.output.weight)
            torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    assert step_calls == ([] if plain or not cpu_supports(torch.float32) else [(1, model.config.dim)])
