"""Run by tests/model/test_tp_inference_post.py under torchrun: the reference log-probs (herd.post.logps) of the tiny
model split over the ranks, and TensorParallel.mean of rank-dependent tensors, saved to OUT/rank{r}.pt.
Args: OUT MODEL_DIR TOKENS_FILE."""

import sys

import torch

from herd.checkpoint import load
from herd.model.tensor_parallel import init_tensor_parallel
from herd.post.logps import token_logps


def main(out: str, model_dir: str, batch: str) -> None:
    tp = init_tensor_parallel(2, "cpu")
    reference, _ = load(model_dir, tp=tp)
    tokens, targets = torch.load(batch)
    with torch.no_grad():
        logps = token_logps(reference, tokens, targets)
    mean = tp.mean(torch.full((3,), float(tp.rank + 1)))  # ranks 1 and 2: mean 1.5
    torch.save({"logps": logps, "mean": mean, "head_rows": reference.output.weight.shape[0]}, f"{out}/rank{tp.rank}.pt")
    tp.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
