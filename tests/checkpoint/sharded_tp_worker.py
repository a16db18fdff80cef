"""Run by tests/checkpoint/test_sharded_load_tp.py under torchrun: the checkpoint loaded as this rank's slice
(`herd.checkpoint.load(dir, tp=...)`), plain and int8/fp8-quantized after slicing; logits and greedy tokens saved
to OUT/rank{r}.pt. Args: OUT TP DIR."""

import sys

import torch

import herd.checkpoint as ckpt
from herd.generation.generate import generate_tokens
from herd.model.tensor_parallel import init_tensor_parallel
from herd.serve.quantize import quantize
from tests.model.test_tp_inference import PROMPTS


def main(out: str, tp_size: int, directory: str) -> None:
    tp = init_tensor_parallel(tp_size, "cpu")
    tokens = torch.tensor([p[:6] for p in PROMPTS])
    result = {}
    for kind in (None, "int8", "fp8"):
        model, _ = ckpt.load(directory, tp=tp)
        if kind is not None:
            quantize(model, kind)
        with torch.inference_mode():
            logits = model(tokens)
        greedy = [r.tokens for r in generate_tokens(model, PROMPTS, max_new_tokens=8)]
        result[kind] = {"logits": logits, "greedy": greedy}
    torch.save(result, f"{out}/rank{tp.rank}.pt")
    tp.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
