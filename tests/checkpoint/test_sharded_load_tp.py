"""int8 and fp8 under tensor parallelism, from a Meta MP=2 checkpoint under torchrun (gloo, CPU): each rank loads its
slice (`load(dir, tp=...)`, re-split over 4 ranks at tp=4) and quantizes it, and its logits are as close to the fp32
model's as the single process's quantized ones; unquantized, logits within 1e-5 and greedy tokens equal (tp=2 from
each format is tests/model/test_tp_inference's)."""

from __future__ import annotations

import pytest
import torch

import herd.checkpoint as ckpt
from herd.checkpoint import meta_format
from herd.generation.generate import generate_tokens
from herd.serve.quantize import quantize
from herd.tokenizer import Tokenizer
from tests.checkpoint.test_checkpoint import random_model
from tests.checkpoint.test_sharded_load import tp_config
from tests.model.test_tp_inference import PROMPTS, ROOT, torchrun


def single_process(directory, kind):
    model, _ = ckpt.load(directory)
    if kind is not None:
        quantize(model, kind)
    with torch.inference_mode():
        logits = model(torch.tensor([p[:6] for p in PROMPTS]))
    return logits, [r.tokens for r in generate_tokens(model, PROMPTS, max_new_tokens=8)]


@pytest.mark.slow
@pytest.mark.parametrize("tp", [2, 4])
def test_quantized_tp_ranks_stay_as_close_as_single_process(tmp_path, byte_bpe_path, tp):
    model, tok = random_model(tp_config()).eval(), Tokenizer(byte_bpe_path)
    directory = tmp_path / "meta-mp2"
    directory.mkdir()
    meta_format.write(model, tok, directory, mp=2)
    torchrun(tp, str(ROOT / "tests/checkpoint/sharded_tp_worker.py"), str(tmp_path), str(tp), str(directory))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(tp)]
    exact, greedy = single_process(directory, None)
    for result in ranks:
        assert (result[None]["logits"] - exact).abs().max() < 1e-5
        assert result[None]["greedy"] == greedy
    for kind in ("int8", "fp8"):
        quantized, _ = single_process(directory, kind)
        whole_error = (quantized - exact).abs().max()
        for result in ranks:
            rank_error = (result[kind]["logits"] - exact).abs().max()
            assert 0 < rank_error <= 1.5 * whole_error, (kind, rank_error, whole_error)
