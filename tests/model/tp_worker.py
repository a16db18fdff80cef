"""Run by tests/model/test_tp_inference.py under torchrun: the TP model's logits and generations on this rank, saved
to OUT/rank{r}.pt. Args: OUT TP [CHECKPOINT] (default: the test's random model, cut after building it whole)."""

import sys

import torch

from herd.checkpoint import load
from herd.generation.generate import generate_tokens
from herd.model.tensor_parallel import init_tensor_parallel, parallelize
from tests.model.test_tp_inference import PROMPTS, tp_model


def main(out: str, tp_size: int, checkpoint: str | None) -> None:
    tp = init_tensor_parallel(tp_size, "cpu")
    model = parallelize(tp_model(), tp) if checkpoint is None else load(checkpoint, tp=tp)[0]
    tokens = torch.tensor([p[:6] for p in PROMPTS])
    result = {
        "logits": model(tokens),
        "greedy": [r.tokens for r in generate_tokens(model, PROMPTS, max_new_tokens=10, logprobs=True)],
        "sampled": [r.tokens for r in generate_tokens(model, PROMPTS, max_new_tokens=10, temperature=1.0, seed=3)],
        "kv_heads": model.kv_heads,
        "embedding_rows": model.tok_embeddings.weight.shape[0],
    }
    torch.save(result, f"{out}/rank{tp.rank}.pt")
    tp.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None)
