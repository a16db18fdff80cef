"""`herd serve --guard DIR --device X`: the guard loads on the serve device, and a --device this machine cannot
serve on stops every command with one line naming --device before anything loads."""

import argparse

import pytest

from herd.cli import main
from herd.cli.serve import load_guardrails


def test_the_guard_loads_on_the_serve_device():
    """meta stands in for a GPU on a CPU-only machine: the guard's weights are where --device says (a preset, as a
    checkpoint's load checks its weights are finite, which meta tensors cannot answer)."""
    args = argparse.Namespace(guard="tiny", code_shield=False, device="meta")
    model = load_guardrails(args, 0).guard.model
    assert {p.device.type for p in model.parameters()} == {"meta"}


@pytest.mark.parametrize("device, error", [
    ("cuda:7", "herd: error: --device cuda:7 but 0 CUDA GPU(s) are visible; use --device cpu or a visible GPU\n"),
    ("gpu0", "herd: error: --device gpu0 is not a device torch knows; use cpu, cuda or cuda:N\n"),
])
@pytest.mark.parametrize("command", [["serve", "--guard", "tiny", "--port", "0"], ["generate", "--prompt", "x"]])
def test_a_device_this_machine_lacks_is_one_line(monkeypatch, capsys, command, device, error):
    monkeypatch.setattr("torch.cuda.device_count", lambda: 0)  # a CPU-only machine, wherever the test runs
    with pytest.raises(SystemExit) as stopped:
        main([*command, "--model", "tiny", "--device", device])
    assert stopped.value.code == 2 and capsys.readouterr().err == error
