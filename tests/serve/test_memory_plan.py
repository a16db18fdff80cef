"""herd.serve.memory_plan on Meta's presets over N x 80 GB: the per-rank arithmetic, which settings fit (8B on one
device, 70B bf16 on two at 8K, 405B bf16 on eight does not, 405B int8/fp8 on eight does at 128K) and the one-line
advice when one does not."""

from __future__ import annotations

import pytest
import torch

from herd.errors import HerdError
from herd.model import preset
from herd.serve.memory_plan import check_plan, check_run_memory, device_memory, plan_memory

H100 = 80 * 10**9  # "80 GB" read conservatively: an H100 80GB reports ~85e9 bytes


def norm_params(config) -> int:
    return (2 * config.n_layers + 1) * config.dim


def test_bf16_weights_split_all_but_the_norms():
    for name, tp in (("llama3-8b", 1), ("llama3-70b", 2), ("llama3.1-405b", 8)):
        config = preset(name)
        split = config.num_params() - norm_params(config)
        assert plan_memory(config, tp=tp).weights == 2 * split // tp + 2 * norm_params(config), name


def test_quantized_weights_are_a_byte_plus_a_scale_per_local_row():
    config = preset("llama3.1-405b")
    embedding = config.vocab_size * config.dim
    linear = config.num_params() - norm_params(config) - embedding
    hd, kv = config.head_dim, config.kv_heads * config.head_dim
    rows_per_block = (config.n_heads * hd + 2 * kv + 2 * config.ffn_hidden_dim) // 8 + 2 * config.dim  # wo, w2 whole
    scales = 4 * (config.n_layers * rows_per_block + config.vocab_size // 8)
    for kind in ("int8", "fp8"):
        plan = plan_memory(config, tp=8, quantize=kind)
        assert plan.weights == linear // 8 + scales + 2 * embedding // 8 + 2 * norm_params(config)


def test_kv_cache_holds_the_local_kv_heads():
    config = preset("llama3-70b")
    plan = plan_memory(config, tp=4, context=8192, batch=3)
    assert plan.kv_cache == 2 * config.n_layers * 3 * 8192 * (config.kv_heads // 4) * config.head_dim * 2
    assert plan_memory(config, tp=4, context=8192, batch=3, step_tokens=256).workspace < plan.workspace


@pytest.mark.parametrize(
    ("name", "tp", "quantize", "context", "fits"),
    [
        ("llama3-8b", 1, None, 8192, True),
        ("llama3-70b", 1, None, 8192, False),  # 141 GB of weights
        ("llama3-70b", 2, None, 8192, True),  # 70.6 GB of weights, 73 GB in all
        ("llama3.1-70b", 2, None, 131072, False),  # the 128K cache and prefill do not fit beside them
        ("llama3.1-405b", 8, None, 8192, False),  # 101.5 GB of weights a rank
        ("llama3.1-405b", 8, "int8", 131072, True),  # 51 GB of weights, as Meta's FP8 release on one node
        ("llama3.1-405b", 8, "fp8", 131072, True),
    ],
)
def test_presets_on_80gb_devices(name, tp, quantize, context, fits):
    assert plan_memory(preset(name), tp=tp, quantize=quantize, context=context, available=H100).fits == fits


def test_405b_bf16_is_told_to_quantize(capsys):
    config = preset("llama3.1-405b")
    with pytest.raises(HerdError) as error:
        check_plan(config, plan_memory(config, tp=8, context=8192, available=H100))
    message = str(error.value)
    assert "\n" not in message and "weights 94.5" in message and "of 74.5 GiB" in message
    assert message.endswith("store weights as int8 or fp8 (--quantize)")  # 16 ranks cannot split 8 kv heads
    assert capsys.readouterr().err.startswith("memory plan per rank at tp 8 (bfloat16): weights 94.5")


def test_70b_long_context_gets_every_remedy():
    config = preset("llama3.1-70b")
    with pytest.raises(HerdError) as error:
        check_plan(config, plan_memory(config, tp=2, context=131072, available=H100))
    message = str(error.value)
    assert "use 4 ranks (--tp 4); store weights as int8 or fp8 (--quantize); shorten the context to <= " in message
    longest = int(message.split("<= ")[1].split()[0])
    assert plan_memory(config, tp=2, context=longest, available=H100).fits
    assert not plan_memory(config, tp=2, context=longest + 1, available=H100).fits


def test_batch_remedy_and_nothing_fits():
    config = preset("llama3-8b")
    with pytest.raises(HerdError, match=r"lower the batch to <= \d+$"):
        check_plan(config, plan_memory(config, context=8192, batch=64, step_tokens=256, available=H100))
    with pytest.raises(HerdError, match="no setting at this model size fits"):
        check_plan(config, plan_memory(config, available=10**9))


def test_errors_and_host_memory():
    with pytest.raises(HerdError, match="n_kv_heads of 8 is not divisible by --tp 16"):
        plan_memory(preset("llama3.1-405b"), tp=16)
    with pytest.raises(HerdError, match="unknown quantization 'int4'"):
        plan_memory(preset("tiny"), quantize="int4")
    whole = device_memory("cpu")
    assert whole is None or 0 < device_memory("cpu", 4) <= whole // 4


def test_run_plan_reads_the_checkpoint_config(capsys):
    """A preset (stored float32) at tp 2 on the host: the plan of its config, printed, against a share of the host."""
    from herd.model.cpu_tuning import can_prepack

    plan = check_run_memory("tiny", tp=2, device="cpu", context=256, batch=2)
    packed = can_prepack(torch.empty(0))  # serve prepacks fp32 linears where oneDNN runs them
    assert plan == plan_memory(preset("tiny"), tp=2, dtype="float32", context=256, batch=2,
                               available=plan.available, prepacked=packed)
    assert 0.8 < plan.available / device_memory("cpu", 2) < 1.25  # the host's free memory moves meanwhile
    kind = "float32, prepacked linears" if packed else "float32"
    assert capsys.readouterr().err.startswith(f"memory plan per rank at tp 2 ({kind}): weights ")
    assert check_run_memory("tiny", tp=1, device="cpu", dtype=torch.bfloat16, quantize="int8").weights < plan.weights


def test_serve_prints_the_plan_and_stops_before_loading():
    """`herd serve` on a model the host cannot hold fails at the plan, with no weights built or read."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-m", "herd.cli", "serve", "--model", "llama3.1-405b", "--quantize", "fp8", "--port",
               "0"]  # serve binds its port first
    result = subprocess.run(command, capture_output=True, text=True, cwd=root, timeout=120, check=False,
                            env={**os.environ, "PYTHONPATH": str(root)})
    lines = result.stderr.splitlines()
    assert result.returncode == 2 and len(lines) == 2, result.stderr
    assert lines[0].startswith("memory plan per rank at tp 1 (fp8 weights, float32): weights 38")
    assert lines[1].startswith("herd: error: the model does not fit: per rank at tp 1")


@pytest.mark.parametrize(("command", "tokens"), [
    (["generate", "--prompt", "hi there", "--max-new-tokens", "5"], "1 x 13 tokens"),  # the prompt's bytes + 5
    (["chat", "--system", "be brief", "--max-new-tokens", "7"], "1 x 15 tokens"),  # the system prompt + the reply
    (["eval", "--tasks", "mmlu"], "1 x 131072 tokens"),  # one request of the model's whole context
])
def test_generate_chat_and_eval_print_the_plan_and_stop_before_loading(capsys, command, tokens):
    """The plan serve prints comes first for generate, chat and eval too; a model the device cannot hold stops
    there, in one line, with no weights built or read."""
    from herd.cli import main

    with pytest.raises(SystemExit) as stopped:
        main([command[0], "--model", "llama3.1-405b", *command[1:]])
    lines = capsys.readouterr().err.splitlines()
    assert stopped.value.code == 2 and len(lines) == 2, lines
    assert lines[0].startswith("memory plan per rank at tp 1 (float32): weights ") and f"({tokens})" in lines[0]
    assert lines[1].startswith("herd: error: the model does not fit: per rank at tp 1")


def test_advice_names_the_commands_own_options():
    """8B in fp32 on 20 GB: generate (and chat) may cast to bf16 or cut the prompt and reply, eval only add ranks,
    serve quantize."""
    plan = plan_memory(preset("llama3-8b"), dtype="float32", context=1000, available=20 * 2**30)
    advice = {}
    for run in ("generate", "eval", "serve"):
        with pytest.raises(HerdError) as error:
            check_plan(preset("llama3-8b"), plan, show=False, run=run)
        advice[run] = str(error.value).split("GiB; ")[1]
    assert advice["generate"] == "use 2 ranks (--tp 2); cast the weights to bfloat16 (--dtype bfloat16)"
    assert advice["eval"] == "use 2 ranks (--tp 2)"
    assert advice["serve"] == "use 2 ranks (--tp 2); store weights as int8 or fp8 (--quantize)"


def test_serve_plans_against_its_serving_device(monkeypatch, capsys):
    """`serve(device="cuda:0")` checks its plan against that GPU's free memory (read through `available_bytes`,
    here a 64 MiB GPU faked on this CPU machine), not the host's: llama3-125m stops at the plan, nothing loaded."""
    from herd.serve import memory_plan
    from herd.serve.server import serve

    def free_bytes(device: torch.device) -> int:
        return 64 * 2**20 if device.type == "cuda" else 2**40

    monkeypatch.setattr(memory_plan, "available_bytes", free_bytes)
    with pytest.raises(HerdError, match="the model does not fit: per rank at tp 1 .* of 0.1 GiB"):
        serve("llama3-125m", device="cuda:0")
    assert capsys.readouterr().err.startswith("memory plan per rank at tp 1 (float32): weights 0.")


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize(("prepacked", "plain_kept"), [(False, False), (True, False), (True, True)])
def test_the_weights_are_the_bytes_herd_serve_holds(tied, prepacked, plain_kept):
    """The plan's weights equal the bytes of the model `herd serve` serves on CPU: prepacked linears (a tied head
    gets its own packed copy), with their plain weights kept for the compiled one-request step."""
    import copy

    from herd.model import build_model
    from herd.serve.packed import can_pack, pack_linears

    config = preset("tiny").replace(tie_word_embeddings=tied)
    model = build_model(config)
    if prepacked and not can_pack(model):
        pytest.skip("this CPU's torch has no oneDNN fp32 prepacking")
    if prepacked:
        model = pack_linears(copy.deepcopy(model), keep_weights=plain_kept)
    tensors = {id(t): t for module in model.modules()
               for t in [*module.parameters(recurse=False), getattr(module, "packed", None)] if t is not None}
    held = sum(t.numel() * t.element_size() for t in tensors.values())
    plan = plan_memory(config, dtype="float32", prepacked=prepacked, plain_kept=plain_kept)
    assert plan.weights == held
    assert ("prepacked linears and their plain weights" in plan.describe()) == plain_kept


def test_a_plan_that_fits_only_without_the_plain_copies_says_compile_off():
    config = preset("llama3-8b")
    space = 50 * 10**9  # 32 GB of weights fit; twice that does not
    plan = plan_memory(config, dtype="float32", prepacked=True, plain_kept=True, context=8192, available=space)
    assert plan_memory(config, dtype="float32", prepacked=True, context=8192, available=space).fits
    with pytest.raises(HerdError, match=r"serve the one-request step eager \(--compile off\)"):
        check_plan(config, plan, show=False)
