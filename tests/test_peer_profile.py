"""benchmarks/peer_profile.py: a peer's profile is printed only when herd is more than 2x ahead, and it names where
the peer's time went (the op or function that did the work)."""

import torch
from peer_profile import explain, python_top_functions, torch_top_ops


def _slow_python_peer() -> int:
    return sum(i * i for i in range(200_000))


def test_python_profile_names_the_peer_function_and_the_total():
    table = python_top_functions(_slow_python_peer)
    assert "profiled in all" in table.splitlines()[0]
    assert "_slow_python_peer" in table and "<genexpr>" in table


def test_torch_profile_names_the_peer_op():
    a = torch.randn(64, 64)
    assert "aten::mm" in torch_top_ops(lambda: a @ a)


def test_explain_profiles_only_above_2x(capsys):
    explain(1.9, "peer", _slow_python_peer, kind="python")
    assert capsys.readouterr().out == ""
    explain(2.5, "peer", _slow_python_peer, kind="python")
    out = capsys.readouterr().out
    assert "herd / peer = 2.50x > 2x" in out and "<genexpr>" in out
