"""int8 weight-only quantization vs the fp32 model on CPU: perplexity delta on a fixed text, serving speed.

    python benchmarks/serve_quant.py [--model llama3-125m] [--requests 8] [--max-tokens 64]

Perplexity and mean KL(fp32 || int8) are measured on the fixed passage below; speed is output tokens/s of the
serving engine on the same greedy requests, for the plain fp32 model, the fp32 model with the prepacked linears
`herd serve` uses on CPU, and the int8 model. With a preset the weights are random (their
perplexity is near the vocabulary size); pass a trained checkpoint for a meaningful quality figure.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

import herd
from herd.serve import Engine, EngineConfig, RequestParams
from herd.serve.packed import pack_linears
from herd.serve.quantize import quantize_int8

TEXT = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, it was "
    "the season of Darkness, it was the spring of hope, it was the winter of despair, we had everything before us, "
    "we had nothing before us, we were all going direct to Heaven, we were all going direct the other way."
)


@torch.inference_mode()
def quality(model, quantized, tokens: torch.Tensor) -> tuple[float, float, float]:
    """(perplexity fp32, perplexity int8, mean KL) of next-token predictions over `tokens` [1, T]."""
    ref = model(tokens)[0, :-1].float().log_softmax(-1)
    approx = quantized(tokens)[0, :-1].float().log_softmax(-1)
    targets = tokens[0, 1:, None]
    nll_ref, nll_q = -ref.gather(1, targets).mean(), -approx.gather(1, targets).mean()
    kl = (ref.exp() * (ref - approx)).sum(-1).mean()
    return nll_ref.exp().item(), nll_q.exp().item(), kl.item()


def throughput(model, tok, requests: int, max_tokens: int) -> float:
    """Output tokens/s of the engine on `requests` greedy requests running together."""
    engine = Engine(model, tok, EngineConfig(max_running=requests, max_step_tokens=max(256, requests)))
    prompts = [tok.encode(f"Request {i}: " + TEXT[: 80 + 10 * i], bos=True) for i in range(requests)]
    for i, prompt in enumerate(prompts):
        engine.add_request(str(i), prompt, RequestParams(max_tokens=max_tokens))
    start, produced = time.perf_counter(), 0
    while engine.has_unfinished():
        produced += sum(out.token_id is not None for out in engine.step())
    return produced / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama3-125m")
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    model, tok = herd.load(args.model)
    quantized = quantize_int8(copy.deepcopy(model))
    tokens = torch.tensor([tok.encode(TEXT, bos=True)])
    ppl, ppl_q, kl = quality(model, quantized, tokens)
    print(f"model {args.model}, {model.num_params() / 1e6:.1f}M params, {tokens.shape[1]} tokens of text, "
          f"{torch.get_num_threads()} threads")
    print(f"perplexity fp32 {ppl:.3f}  int8 {ppl_q:.3f}  delta {ppl_q - ppl:+.3f} ({(ppl_q / ppl - 1) * 100:+.2f}%)  "
          f"mean KL {kl:.2e}")
    packed = pack_linears(copy.deepcopy(model))
    speeds = {}
    for name, candidate in (("fp32", model), ("fp32 prepacked", packed), ("int8", quantized)):
        throughput(candidate, tok, 2, 4)  # warm-up
        speeds[name] = throughput(candidate, tok, args.requests, args.max_tokens)
    print(f"engine output tokens/s at {args.requests} requests: "
          + "  ".join(f"{name} {speed:.1f} ({speed / speeds['fp32']:.2f}x)" for name, speed in speeds.items()))


if __name__ == "__main__":
    main()
