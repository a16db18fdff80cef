"""Serving throughput and latency on CPU: herd's engine (continuous batching) vs HF transformers `generate`
(static batches), in the style of vLLM's benchmark_serving.

    python benchmarks/serve_throughput.py [--concurrency 1,8,16,32] [--runs 3] [--threads 1]

Model: a ~48M-parameter Llama-architecture decoder (random weights, fp32, a 32K vocabulary so no Llama 3 stop
token can come out: every request runs to its fixed length). Workload: random prompts of 32..160 tokens, output
lengths spread uniformly over 16..256, the same requests for both. At concurrency c herd's engine keeps c
requests in flight (a new one is sent as soon as one finishes, as benchmark_serving's --max-concurrency does),
with the prepacked linears `herd serve` uses on CPU (`--unpacked`: plain F.linear) and, as `herd serve
--compile auto`, its compiled one-request step where it pays (`--compile off`: every step eager). HF runs the same
requests in static batches of c, each batch generating its longest request's length. Times are taken in-process at
every new token: TTFT from a request's send (herd) or its batch's start (HF) to its first token, TPOT = (latency -
TTFT) / (tokens - 1) per request, ITL = every gap between consecutive tokens, output tokens/s = the requests'
tokens / wall time. Each level runs herd then HF, `--runs` times interleaved;
the table shows medians over runs. The headline is concurrency 16 (target: herd >= 2x HF's output tokens/s
with a lower TTFT p50). HF runs its default `generate` (DynamicCache, SDPA, eager; its static cache +
torch.compile recipe is for one fixed shape, and each batch here has its own prompt width and length), its
settings and the CPU printed beside the figures; when herd is more than 2x ahead, one more HF batch of 16
(shorter outputs) is profiled and its top ops printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import transformers
from cpu_info import cpu_line
from transformers import LlamaForCausalLM, StoppingCriteria, StoppingCriteriaList

import herd.checkpoint as ckpt
from herd.cli.models import COMPILE
from herd.model import ModelConfig, build_model
from herd.serve import Engine, EngineConfig, RequestParams
from herd.serve.compiled_step import choose_serve_path, prepare_linears
from herd.tokenizer import Tokenizer, default_tokenizer_path

CONFIG = ModelConfig(
    dim=512, n_layers=10, n_heads=8, n_kv_heads=4, vocab_size=32768, multiple_of=256, ffn_dim_multiplier=None,
    max_seq_len=1024, tie_word_embeddings=True,
)


@dataclass
class Request:
    prompt: list[int]
    output_len: int


@dataclass
class Trace:
    """When one request was sent and when each of its tokens came out (perf_counter seconds)."""

    sent: float
    tokens: list[float] = field(default_factory=list)


def workload(
    count: int, seed: int, vocab: int = CONFIG.vocab_size, prompts: tuple[int, int] = (32, 160),
    outputs: tuple[int, int] = (16, 256),
) -> list[Request]:
    """Random prompts and output lengths spread uniformly over the given ranges, reproducible from `seed`."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(prompts[0], prompts[1] + 1, (count,), generator=g).tolist()
    news = torch.randint(outputs[0], outputs[1] + 1, (count,), generator=g).tolist()
    return [Request(torch.randint(0, vocab, (n,), generator=g).tolist(), m) for n, m in zip(lengths, news, strict=True)]


def run_herd(engine: Engine, requests: list[Request], concurrency: int) -> tuple[list[Trace], float]:
    """Closed loop: `concurrency` requests in flight, the next sent when one finishes."""
    traces: dict[str, Trace] = {}
    todo = list(enumerate(requests))
    start = time.perf_counter()
    while todo or engine.has_unfinished():
        while todo and engine.num_running + engine.num_waiting < concurrency:
            i, request = todo.pop(0)
            engine.add_request(str(i), request.prompt, RequestParams(max_tokens=request.output_len))
            traces[str(i)] = Trace(time.perf_counter())
        outputs = engine.step()
        now = time.perf_counter()
        for out in outputs:
            if out.token_id is not None:
                traces[out.request_id].tokens.append(now)
    return [traces[str(i)] for i in range(len(requests))], time.perf_counter() - start


class _StepClock(StoppingCriteria):
    """Records when each generation step of HF's `generate` ends; never stops anything."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        self.times.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)


@torch.inference_mode()
def run_hf(hf: LlamaForCausalLM, requests: list[Request], batch: int) -> tuple[list[Trace], float]:
    """Static batches of `batch` requests, left-padded; each runs to its longest request's length."""
    traces = []
    start = time.perf_counter()
    for first in range(0, len(requests), batch):
        group = requests[first : first + batch]
        width = max(len(r.prompt) for r in group)
        ids = torch.zeros(len(group), width, dtype=torch.long, device=hf.device)
        mask = torch.zeros_like(ids)
        for row, r in enumerate(group):
            ids[row, width - len(r.prompt) :] = torch.tensor(r.prompt, device=hf.device)
            mask[row, width - len(r.prompt) :] = 1
        clock = _StepClock()
        sent = time.perf_counter()
        longest = max(r.output_len for r in group)
        hf.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=longest,
                    pad_token_id=0, stopping_criteria=StoppingCriteriaList([clock]))
        assert len(clock.times) == longest, "HF stopped early: set generation_config.eos_token_id = None"
        traces += [Trace(sent, clock.times[: r.output_len]) for r in group]  # a static batch ignores EOS
    return traces, time.perf_counter() - start


def summarize(traces: list[Trace], seconds: float) -> dict[str, float]:
    """benchmark_serving's figures (milliseconds, tokens/s)."""
    ttft = [t.tokens[0] - t.sent for t in traces]
    tpot = [(t.tokens[-1] - t.tokens[0]) / (len(t.tokens) - 1) for t in traces if len(t.tokens) > 1]
    itl = [b - a for t in traces for a, b in zip(t.tokens, t.tokens[1:])]
    tokens = sum(len(t.tokens) for t in traces)
    q = statistics.quantiles
    return {"ttft_p50": statistics.median(ttft) * 1e3, "ttft_p99": q(ttft, n=100)[98] * 1e3,
            "tpot_p50": statistics.median(tpot) * 1e3, "itl_p50": statistics.median(itl) * 1e3,
            "itl_p99": q(itl, n=100)[98] * 1e3, "tok_s": tokens / seconds}


def hf_model(model, tok: Tokenizer, directory: str) -> LlamaForCausalLM:
    """HF's LlamaForCausalLM with herd's weights (through herd's HF writer)."""
    ckpt.save(model, tok, directory, format="hf")
    transformers.logging.set_verbosity_error()  # the config's Llama 3 special ids lie past this small vocab
    hf = LlamaForCausalLM.from_pretrained(directory).eval()
    hf.generation_config.eos_token_id = None  # static batches run to their longest request
    return hf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", default="1,8,16,32")
    parser.add_argument("--batches", type=int, default=2, help="requests per level: this many static batches")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--unpacked", action="store_true", help="herd without prepacked linears (plain F.linear)")
    parser.add_argument("--compile", choices=tuple(COMPILE), default="auto",
                        help="herd's one-request step, as herd serve --compile (default: %(default)s, herd serve's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tok = Tokenizer(default_tokenizer_path())
    model = build_model(CONFIG).eval()
    model.init_weights(0)
    levels = [int(c) for c in args.concurrency.split(",")]
    params = model.num_params()
    with tempfile.TemporaryDirectory() as directory:
        hf = hf_model(model, tok, directory)
    # as `herd serve` does on CPU: prepacked, the plain weights kept where its one-request step compiles
    path = choose_serve_path(model, COMPILE[args.compile]) if args.unpacked else prepare_linears(
        model, COMPILE[args.compile])
    print(cpu_line())
    print(f"{params / 1e6:.1f}M-parameter Llama, fp32, {'plain' if args.unpacked else 'prepacked'} linears, "
          f"{args.threads} thread(s), torch "
          f"{torch.__version__}, transformers {transformers.__version__}; prompts 32..160, outputs 16..256 tokens; "
          f"median of {args.runs} runs")
    print(f"herd: Engine(max_running=c), continuous batching, paged KV cache; HF: generate(do_sample=False) in static "
          f"batches of c, left-padded, its default DynamicCache, eager, attention {hf.config._attn_implementation}, "
          f"{hf.dtype}")
    engines = {c: Engine(model, tok, EngineConfig(max_running=c, max_step_tokens=max(256, c),
                                                  compile=COMPILE[args.compile]), path=path) for c in levels}
    print(f"herd's engine: {engines[levels[0]].decode_path}")
    warm = workload(2, seed=1)
    for c in levels:  # warm-up: allocations, kernels, HF's first-call set-up
        run_herd(engines[c], warm, c)
    run_hf(hf, warm, 2)
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    for run in range(args.runs):
        for c in levels:
            requests = workload(max(c * args.batches, 4), seed=100 * run + c)
            results.setdefault(("herd", c), []).append(summarize(*run_herd(engines[c], requests, c)))
            results.setdefault(("HF", c), []).append(summarize(*run_hf(hf, requests, c)))
    keys = ["ttft_p50", "ttft_p99", "tpot_p50", "itl_p50", "itl_p99", "tok_s"]
    print(f"{'conc':>4} {'engine':6} {'TTFT p50':>9} {'TTFT p99':>9} {'TPOT p50':>9} {'ITL p50':>8} {'ITL p99':>8} "
          f"{'out tok/s':>9} {'tok/s vs HF':>11} {'TTFT p50 vs HF':>14}   (ms unless noted)")
    for c in levels:
        medians = {name: {k: statistics.median(r[k] for r in results[(name, c)]) for k in keys}
                   for name in ("herd", "HF")}
        for name, m in medians.items():
            ratios = ""
            if name == "herd":
                ratios = f"{m['tok_s'] / medians['HF']['tok_s']:10.2f}x {m['ttft_p50'] / medians['HF']['ttft_p50']:13.2f}x"
            print(f"{c:4d} {name:6} {m['ttft_p50']:9.1f} {m['ttft_p99']:9.1f} {m['tpot_p50']:9.1f} {m['itl_p50']:8.1f} "
                  f"{m['itl_p99']:8.1f} {m['tok_s']:9.1f} {ratios}")
        if c == 16:
            ratio = medians["herd"]["tok_s"] / medians["HF"]["tok_s"]
            print(f"headline: concurrency 16, herd / HF static batches {ratio:.2f}x output tokens/s (target >= 2.0x)")
            if ratio > 2:
                print("herd is more than 2x ahead of a mature peer: one HF static batch of 16 (outputs of 16..32 "
                      "tokens) under torch.profiler, top ops by self CPU time")
                with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                    run_hf(hf, workload(16, seed=16, outputs=(16, 32)), 16)
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=50))


if __name__ == "__main__":
    main()
