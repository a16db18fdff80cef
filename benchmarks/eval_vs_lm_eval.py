"""Loglikelihood requests/s on CPU: herd's harness vs lm-evaluation-harness's HF backend, same model (a random
llama3-125m saved as HF LlamaForCausalLM), same requests: AGIEval aqua-rat, 5-shot, 5 choices scored on "(A)".."(E)"
(herd's prompts, from ../shared/data/benchmarks). Runs alternate herd / lm-eval; the table shows medians.
lm-eval runs as its docs show for a local HF model on CPU (`HFLM(pretrained=DIR, device="cpu", dtype="float32",
batch_size=B)`: its defaults otherwise, logits cache on, HF's SDPA attention), the same batch size as herd, its
settings printed beside the figure; when herd comes out more than 2x ahead, one more lm-eval pass is profiled and
its top ops printed (where its time goes). "herd, a forward per pair" is herd's reference path (share_prefix=False:
no context shared between a question's choices, the head over every position), lm-eval's amount of work.

    python benchmarks/eval_vs_lm_eval.py [--preset llama3-125m] [--questions 8] [--runs 3] [--batch-size 8]
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from herd.checkpoint import load, save
from herd.eval import EvalOptions, encode_pair, get_task, loglikelihood, loglikelihood_tokens
from herd.eval.evaluate import build_prompts

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmarks"


def requests(n_questions: int) -> list[tuple[str, str]]:
    """(context, continuation) for every choice of the first questions of aqua-rat, as `herd eval` builds them."""
    task = get_task("agieval")
    samples = [s for s in task.samples(DATA) if s.group == "aqua-rat"][:n_questions]
    prompts = build_prompts(task, samples, DATA, EvalOptions())
    return [(p, task.target_delimiter + c) for s, p in zip(samples, prompts) for c in s.choices]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="llama3-125m")
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"needs the AGIEval files in {DATA}")
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    torch.set_num_threads(args.threads)
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    reqs = requests(args.questions)
    with tempfile.TemporaryDirectory() as tmp:
        model, tok = load(args.preset)
        save(model, tok, tmp, format="hf")
        model, tok = load(tmp)  # herd reads the very files lm-eval reads
        model.eval()
        lm = HFLM(pretrained=tmp, dtype="float32", device="cpu", batch_size=args.batch_size)
    instances = [Instance("loglikelihood", {}, r, i) for i, r in enumerate(reqs)]
    pairs = [encode_pair(tok, context, continuation) for context, continuation in reqs]
    systems = {
        "herd": lambda: [r.logprob for r in loglikelihood(model, tok, reqs, batch_size=args.batch_size)],
        "herd, a forward per pair": lambda: [r.logprob for r in loglikelihood_tokens(
            model, pairs, batch_size=args.batch_size, share_prefix=False)],
        "lm-eval (HF)": lambda: [lp for lp, _ in lm.loglikelihood(instances, disable_tqdm=True)],
    }
    outputs = {name: run() for name, run in systems.items()}  # warm-up, and the answers to compare
    gap = max(abs(a - b) for name in systems for a, b in zip(outputs[name], outputs["lm-eval (HF)"]))
    times: dict[str, list[float]] = {name: [] for name in systems}
    for index in range(args.runs):
        for name, run in systems.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
        print(f"run {index + 1}: " + ", ".join(f"{name} {t[-1]:.1f} s" for name, t in times.items()), flush=True)
    rate = {name: len(reqs) / statistics.median(t) for name, t in times.items()}
    print(f"lm-eval HFLM settings: batch_size={lm.batch_size}, dtype={lm.model.dtype}, device={lm.device}, "
          f"logits_cache={lm.logits_cache}, attention={lm.model.config._attn_implementation}, "
          f"max_length={lm.max_length}, threads={torch.get_num_threads()}")
    print(f"\n{args.preset}, {len(reqs)} requests (aqua-rat 5-shot, {args.questions} questions), batch "
          f"{args.batch_size}, {args.threads} threads, median of {args.runs}; max |logprob diff| {gap:.1e}\n")
    print("| system | requests/s | vs lm-eval |\n|---|---|---|")
    for name in systems:
        print(f"| {name} | {rate[name]:.2f} | {rate[name] / rate['lm-eval (HF)']:.2f}x |")
    if rate["herd"] / rate["lm-eval (HF)"] > 2:
        print("\nherd is more than 2x ahead of a mature peer: one more lm-eval pass under torch.profiler, top ops by "
              "self CPU time")
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
            systems["lm-eval (HF)"]()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=40))
        print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=6,
                                                                 max_name_column_width=40, max_shapes_column_width=70))


if __name__ == "__main__":
    main()
