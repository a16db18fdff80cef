"""RoPE's two forms: the complex multiply (eager, training) and the real-valued one compiled inference runs."""

import pytest
import torch

from herd.model.rope import _apply_rope_real, apply_rope, rope_cos_sin, rope_frequencies


def tables(positions):
    return rope_cos_sin(rope_frequencies(16, 500000.0), positions)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [False, True], ids=["shared-positions", "per-row-positions"])
def test_the_real_form_equals_the_complex_multiply(dtype, rows):
    positions = torch.tensor([[3, 4, 5], [900, 901, 902]]) if rows else torch.arange(7, 10)
    cos, sin = tables(positions)
    x = torch.randn(2, 3, 4, 16, generator=torch.Generator().manual_seed(0)).to(dtype)
    real = _apply_rope_real(x, cos, sin)
    assert real.dtype == dtype
    torch.testing.assert_close(real, apply_rope(x, cos, sin), atol=1e-6, rtol=0)


@pytest.mark.slow
def test_compiled_inference_runs_the_real_form_and_matches_eager():
    """No complex op left in the compiled graph (inductor would run it outside its kernels); same values."""
    cos, sin = tables(torch.arange(5))
    x = torch.randn(1, 5, 2, 16, generator=torch.Generator().manual_seed(1))
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    compiled = torch.compile(apply_rope, backend=backend)
    with torch.inference_mode():
        out = compiled(x, cos, sin)
    targets = {str(node.target) for gm in graphs for node in gm.graph.nodes}
    assert not any("complex" in target for target in targets), targets
    torch.testing.assert_close(out, apply_rope(x, cos, sin), atol=1e-6, rtol=0)
