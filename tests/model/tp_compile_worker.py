"""Run by tests/model/test_tp_inference.py under torchrun: greedy tokens of the random TP model through the
compiled decode step (compile=True) on this rank, saved to OUT/rank{r}.pt. Args: OUT TP."""

import sys

import torch

from herd.generation.decode_step import choose_decode_path
from herd.generation.generate import generate_tokens
from herd.model.tensor_parallel import init_tensor_parallel, parallelize
from tests.model.test_tp_inference import PROMPTS, tp_model


def main(out: str, tp_size: int) -> None:
    tp = init_tensor_parallel(tp_size, "cpu")
    model = parallelize(tp_model(), tp)
    result = {
        "auto": choose_decode_path(model, None, 10)[0],
        "greedy": [r.tokens for r in generate_tokens(model, PROMPTS[:1], max_new_tokens=10, compile=True)],
    }
    torch.save(result, f"{out}/rank{tp.rank}.pt")
    tp.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
