"""Run by tests/model/test_tp_inference.py under torchrun: the tiny TP model's logits and generations on this rank,
saved to OUT/rank{r}.pt. Args: OUT TP."""

import sys

import torch

from herd.generation.generate import generate_tokens
from herd.model.tensor_parallel import init_tensor_parallel, parallelize
from tests.model.test_tp_inference import PROMPTS, tp_model


def main(out: str, tp_size: int) -> None:
    tp = init_tensor_parallel(tp_size)
    model = parallelize(tp_model(), tp)
    tokens = torch.tensor([p[:6] for p in PROMPTS])
    result = {
        "logits": model(tokens),
        "greedy": [r.tokens for r in generate_tokens(model, PROMPTS, max_new_tokens=10, logprobs=True)],
        "sampled": [r.tokens for r in generate_tokens(model, PROMPTS, max_new_tokens=10, temperature=1.0, seed=3)],
        "kv_heads": model.kv_heads,
    }
    torch.save(result, f"{out}/rank{tp.rank}.pt")
    tp.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
