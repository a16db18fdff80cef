"""The speedrun's report card: RUN/report.md plus curves.png (training loss and validation bits per byte)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from herd.run_dir import write_text
from herd.safety.guard_metrics import headline
from herd.speedrun.eval_stages import MODELS
from herd.speedrun.run import STAGES, RunContext

TOKEN_STAGES = {"pretrain", "anneal"}


def write_report(ctx: RunContext, preset: str, wall_s: float) -> Path:
    m = ctx.manifests
    lines = [f"# herd speedrun report card: preset `{preset}`", ""]
    total = sum(x["duration_s"] for x in m.values())
    lines += [f"Stage time {total / 60:.1f} min in all (this invocation: {wall_s / 60:.1f} min wall, finished stages "
              f"skipped). Device: `{ctx.device}`, dtype `{ctx.dtype}`. Chat with the result: "
              f"`herd chat --model {ctx.run / 'final'}`.", ""]
    lines += _headline(ctx)
    lines += ["## Stages", "", ("CPU s: this process's CPU seconds (all its threads; the data stages' worker processes "
                                "not counted), which other load on the machine hardly changes."), "",
              "| stage | time (s) | CPU s | tokens | throughput | key metrics |", "|---|---:|---:|---:|---:|---|"]
    for name in STAGES:
        lines.append(_stage_row(name, m[name]))
    lines += [""]
    curves = _plot_curves(ctx)
    if curves:
        lines += ["## Pretraining curves", "", f"![loss and validation bits per byte]({curves.name})", ""]
    lines += _data_section(ctx) + _eval_section(ctx) + _safety_section(ctx) + _transcripts(ctx)
    path = ctx.run / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    return path


def _fmt(x: Any, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _stage_row(name: str, manifest: dict[str, Any]) -> str:
    out, secs = manifest["outputs"], manifest["duration_s"]
    tokens, rate, metrics = "", "", ""
    if name in TOKEN_STAGES:
        new = out.get("new_tokens", out["tokens"])
        tokens = f"{new:,}"
        rate = f"{new / max(secs, 1e-9):,.0f} tok/s"
        metrics = f"loss {_fmt(out['final_loss'])}, val bpb {_fmt(out['final_val_bpb'])}"
    elif name == "corpus":
        metrics = f"{sum(out['bytes'].values()) / 1e6:.1f} MB, planted noise {sum(out['planted'].values())} docs"
    elif name == "data":
        metrics = "clean docs " + ", ".join(f"{k} {v}" for k, v in out["clean_docs"].items())
    elif name == "tokenizer":
        metrics = f"{out['source']}: vocab {out['vocab_size']} + 256 special"
    elif name == "tokenize":
        n = sum(out["tokens"].values())
        tokens, rate = f"{n:,}", f"{n / max(secs, 1e-9):,.0f} tok/s"
        metrics = f"{sum(out['bytes'].values()) / max(n, 1):.2f} bytes/token"
    elif name in ("sft", "sft2", "rm", "dpo"):
        figures = {k: v for k, v in out["figures"].items() if isinstance(v, (int, float))}
        metrics = f"loss {_fmt(out['final_loss'])}; " + ", ".join(f"{k} {_fmt(v)}" for k, v in list(figures.items())[:4])
        if out.get("held_out"):
            metrics += "; held-out pair accuracy (chance 0.5) " + ", ".join(
                f"{k} {_fmt(v)}" for k, v in out["held_out"].items())
    elif name == "rejection":
        metrics = (f"{out['samples']} samples, mean reward {_fmt(out['mean_sample_reward'])} -> kept "
                   f"{_fmt(out['mean_kept_reward'])}")
    elif name == "eval":
        metrics = f"{len(out['scores'])} tasks x {len(MODELS)} models"
    elif name == "safety":
        cs = out["codeshield"]
        metrics = f"Code Shield on {cs['n']} completions: " + ", ".join(f"{k} {v}" for k, v in cs["verdicts"].items())
        q = out.get("guard", {}).get("held_out")
        if q:
            metrics += "; guard: " + (f"held-out F1 {_fmt(q['f1'])}" if q["learned"] else "did not learn")
    return f"| {name} | {secs:.1f} | {_fmt(manifest.get('cpu_s'), 1)} | {tokens} | {rate} | {metrics} |"


def unigram_bpb(ctx: RunContext) -> float | None:
    """Bits per byte of the validation text under a unigram model of the training tokens (add-one smoothed)."""
    tok = ctx.outputs("tokenize")
    counts = None
    for name, directory in tok["sources"].items():
        c = _token_counts(Path(directory))
        if name == "val":
            val = c
        else:
            counts = c if counts is None else _add(counts, c)
    if counts is None:
        return None
    size = max(len(counts), len(val))
    counts, val = np.pad(counts, (0, size - len(counts))), np.pad(val, (0, size - len(val)))
    logp = np.log2((counts + 1) / (counts.sum() + size))
    return float(-(val * logp).sum() / max(tok["bytes"]["val"], 1) * _text_share(ctx))


def _text_share(ctx: RunContext) -> float:
    """val bytes of JSONL lines -> of the texts (the JSON quoting is not text): measured on the file."""
    path = ctx.stage_dir("data") / "split" / "val.jsonl"
    text = sum(len(json.loads(line)["text"].encode()) for line in path.open(encoding="utf-8"))
    return path.stat().st_size / max(text, 1)


def _token_counts(directory: Path) -> np.ndarray:
    dtype = json.loads((directory / "manifest.json").read_text())["dtype"]
    ids = np.concatenate([np.fromfile(p, dtype=dtype) for p in sorted(directory.glob("*.bin"))] or [np.zeros(0, int)])
    return np.bincount(ids.astype(np.int64))


def _add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    size = max(len(a), len(b))
    return np.pad(a, (0, size - len(a))) + np.pad(b, (0, size - len(b)))


def _headline(ctx: RunContext) -> list[str]:
    anneal = ctx.outputs("anneal")
    base = unigram_bpb(ctx)
    ev = ctx.outputs("eval")
    scores, reward = ev["scores"], ev["reward"]
    math_row, add_row = scores.get("synth_math", {}), scores.get("synth_addition", {})
    lines = ["## Headline", ""]
    lines.append(f"- Validation bits per byte after annealing: **{_fmt(anneal['final_val_bpb'])}** vs a unigram "
                 f"baseline of {_fmt(base)} (pretraining alone: {_fmt(ctx.outputs('pretrain')['final_val_bpb'])}).")
    lines.append(f"- Synthetic math (exact match): {_chain(math_row, _pct)}.")
    lines.append(f"- 2-digit addition probe (greedy, \"What is 37 + 45?\", exact match, n={add_row.get('n', '-')}): "
                 f"{_chain(add_row, _pct)}.")
    lines.append(f"- Reward-model score of greedy replies to held-out prompts ({_reward_prompts(ev)}): "
                 f"{_reward_chain(ev)}.")
    tools = ev.get("tools", {})
    if tools:
        lines.append(f"- With the calculator tool offered (tools on, n={_tool_n(tools)}): 2-digit addition "
                     f"{_tool_chain(tools.get('synth_addition', {}))}; synthetic math "
                     f"{_tool_chain(tools.get('synth_math', {}))}.")
    refusal = ev.get("refusal")
    if refusal:
        lines.append(f"- Refuses held-out harmful requests: {_refusal_chain(refusal, 'harmful_refused')}; wrongly "
                     f"refuses held-out benign look-alikes: {_refusal_chain(refusal, 'benign_refused')}.")
        if "wrapped_harmful_refused" in next(iter(refusal.values())):
            lines.append(f"- Adversarial (wrapped) requests: refuses harmful "
                         f"{_refusal_chain(refusal, 'wrapped_harmful_refused')}; wrongly refuses benign "
                         f"{_refusal_chain(refusal, 'wrapped_benign_refused')}.")
    change = ev.get("dpo_vs_sft2")
    if change:
        lines.append("- DPO - SFT2, same prompts (paired bootstrap 90% interval): " + "; ".join(
            f"{label} {_signed(change[key], pct)}" for key, label, pct in PAIRED_ROWS if key in change) + ".")
    return lines + [""]


LABELS = {"base": "base", "sft": "SFT", "sft2": "SFT2 (+ rejection sampling)", "dpo": "DPO"}


def _chain(row: dict[str, Any], fmt: Any) -> str:
    return " -> ".join(f"{LABELS[k]} {fmt(row[k])}" for k in MODELS if k in row)


def _tool_n(tools: dict[str, dict[str, Any]]) -> str:
    return "/".join(sorted({str(row["n"]) for row in tools.values()}))


def _tool_chain(row: dict[str, Any]) -> str:
    return " -> ".join(f"{LABELS[k]} {_pct(row[k][row['metric']])}" for k in MODELS if k in row)


def _tool_table(ev: dict[str, Any]) -> list[str]:
    """Tools off and on side by side per chat model, with the base model's score (no tools; exact match by chance
    is ~0) and the share of tools-on dialogs that called the tool."""
    tools = ev.get("tools", {})
    if not tools:
        return []
    chat = [k for k in MODELS if k != "base"]
    lines = [("Tools off / on: the same 0-shot chat prompts, tools on with the calculator offered as Llama 3.1's "
              "built-in `wolfram_alpha` (herd.eval.tool_use's loop, one call round, greedy); in brackets the share "
              "of dialogs that called it. Exact match; chance is ~0%."), "",
             "| probe | n (off / on) | base (no tools) | "
             + " | ".join(f"{LABELS[k]} off | {LABELS[k]} on" for k in chat) + " |", "|---|---:|---:|" + "---:|---:|" * len(chat)]
    for name, row in tools.items():
        off = ev["scores"].get(name, {})
        cells = [f"{_pct(off.get(k))} | {_pct(row[k][row['metric']])} [{_pct(row[k]['called'])}]" for k in chat]
        lines.append(f"| {name} | {off.get('n', '-')} / {row['n']} | {_pct(off.get('base'))} | "
                     + " | ".join(cells) + " |")
    return lines + [""]


PAIRED_ROWS = (("reward", "reward-model score", False), ("reward_math", "- on math prompts", False),
               ("reward_harmful", "- on harmful requests", False), ("reward_benign", "- on benign look-alikes", False),
               ("harmful_refused", "harmful requests refused", True),
               ("benign_refused", "benign look-alikes refused (false refusals)", True),
               ("wrapped_harmful_refused", "adversarial harmful requests refused", True),
               ("wrapped_benign_refused", "adversarial benign requests refused (false refusals)", True),
               ("synth_math", "synthetic math", True), ("synth_addition", "2-digit addition", True))
"""The metrics scored on the same prompts for SFT2 and DPO: (key in scores.json's dpo_vs_sft2, label, a share)."""


def _reward_chain(ev: dict[str, Any]) -> str:
    """Each chat model's mean reward with its bootstrap 90% interval (older scores.json: the mean alone)."""
    intervals = ev.get("reward_interval")
    return _chain(intervals, _number) if intervals else _chain(ev["reward"], _fmt)


def _reward_prompts(ev: dict[str, Any]) -> str:
    """What the reward prompts were: "60 math, 60 harmful, 60 benign" (older scores.json: math alone)."""
    kinds = ev.get("reward_by_kind")
    if not kinds:
        return "math"
    return ", ".join(f"{next(iter(rows.values()))['n']} {kind}" for kind, rows in kinds.items())


def _number(r: dict[str, Any]) -> str:
    interval = f" [{_fmt(r['low'])}-{_fmt(r['high'])}]" if r["low"] != r["high"] else ""
    return f"{_fmt(r['rate'])}{interval}"


def _signed(d: dict[str, Any], pct: bool) -> str:
    """A difference with its interval, e.g. "+7.5 points [+2.5, +12.5]" ("beyond noise" when it excludes 0)."""
    scale, unit, digits = (100, " points", 1) if pct else (1, "", 3)
    low, high = d["low"] * scale, d["high"] * scale
    beyond = ", beyond noise" if low > 0 or high < 0 else ""
    return f"{d['rate'] * scale:+.{digits}f}{unit} [{low:+.{digits}f}, {high:+.{digits}f}{beyond}]"


def _paired_table(ev: dict[str, Any]) -> list[str]:
    """SFT2 and DPO side by side on each paired metric, each with its bootstrap 90% interval, and the difference
    with its paired interval."""
    change = ev.get("dpo_vs_sft2")
    if not change:
        return []
    values = {"reward": ev["reward_interval"], **{k: {m: r[k] for m, r in ev["refusal"].items()} for k in
                                                 next(iter(ev["refusal"].values()))}, **ev.get("intervals", {}),
              **{f"reward_{kind}": rows for kind, rows in ev.get("reward_by_kind", {}).items()}}
    lines = ["DPO against SFT2 on the same prompts (bootstrap 90% intervals; the difference's is paired, "
             "prompt by prompt: beyond noise when it excludes 0):", "",
             f"| metric | n | {LABELS['sft2']} | DPO | DPO - SFT2 |", "|---|---:|---:|---:|---|"]
    for key, label, pct in PAIRED_ROWS:
        if key in change:
            show = _rate if pct else _number
            lines.append(f"| {label} | {change[key]['n']} | {show(values[key]['sft2'])} | {show(values[key]['dpo'])} "
                         f"| {_signed(change[key], pct)} |")
    return lines + [""]


def _refusal_chain(refusal: dict[str, dict[str, Any]], key: str) -> str:
    """Each model's rate, e.g. "base 0.0% -> SFT 62.5% [37.5-87.5]" (bootstrap 90% interval in brackets)."""
    return " -> ".join(f"{LABELS[k]} {_rate(refusal[k][key])}" for k in MODELS if k in refusal)


def _rate(r: dict[str, Any]) -> str:
    if r["rate"] is None:
        return "-"
    interval = f" [{100 * r['low']:.1f}-{100 * r['high']:.1f}]" if r["low"] != r["high"] else ""
    return f"{_pct(r['rate'])}{interval}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _plot_curves(ctx: RunContext) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = []
    for name in ("pretrain", "anneal"):
        path = Path(ctx.outputs(name)["metrics"])
        if path.is_file():
            records += [dict(json.loads(line), phase=name) for line in path.open() if line.strip()]
    if not records:
        return None
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for phase, color in (("pretrain", "C0"), ("anneal", "C1")):
        train = [(r["step"], r["loss"]) for r in records if r["phase"] == phase and "loss" in r and "step" in r]
        val = [(r["step"], r["val_bpb"]) for r in records if r["phase"] == phase and "val_bpb" in r and "step" in r]
        if train:
            a.plot(*zip(*train), color=color, label=f"{phase} train loss")
        if val:
            b.plot(*zip(*val), "o-", color=color, label=f"{phase} val bpb")
    base = unigram_bpb(ctx)
    if base:
        b.axhline(base, color="gray", linestyle="--", label="unigram baseline")
    a.set(xlabel="step", ylabel="loss (nats/token)", title="training loss")
    b.set(xlabel="step", ylabel="bits per byte", title="validation bits per byte")
    a.legend(), b.legend()
    fig.tight_layout()
    path = ctx.run / "curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _data_section(ctx: RunContext) -> list[str]:
    out = ctx.outputs("data")
    lines = ["## What the data pipelines removed", "",
             "| domain | stage | docs in | docs out | dropped (reason: docs) |", "|---|---|---:|---:|---|"]
    for domain, path in out["stats"].items():
        stats = json.loads(Path(path).read_text())
        for st in stats["stages"]:
            if st["name"] == "read":
                continue
            dropped = ", ".join(f"{k}: {v}" for k, v in st["dropped"].items()) or "-"
            mod = f" (modified {st['modified']})" if st.get("modified") else ""
            lines.append(f"| {domain} | {st['name']}{mod} | {st['docs_in']:,} | {st['docs_out']:,} | {dropped} |")
    planted = ctx.outputs("corpus")["planted"]
    left = out.get("planted_left", {})
    lines += ["", "Planted noise in the corpus and what survived the pipelines (dedup keeps the first copy of each "
              "duplicate group, which may be the planted copy: duplicates removed are the dedup rows above):", "",
              "| planted kind | docs planted | docs left | removed |", "|---|---:|---:|---:|"]
    for kind, n in planted.items():
        lines.append(f"| {kind} | {n} | {left.get(kind, 0)} | {_pct(1 - left.get(kind, 0) / n)} |")
    return lines + [""]


def _eval_section(ctx: RunContext) -> list[str]:
    ev = ctx.outputs("eval")
    lines = ["## Evaluation", "",
             ("Base: 3-shot plain text (knowledge 0-shot); SFT, SFT2 and DPO: 0-shot chat. Synthetic tasks are held "
              "out from training (see herd/eval/tasks/synthetic.py)."), "",
             "| benchmark | metric | n | " + " | ".join(LABELS[k] for k in MODELS) + " |", "|---|---|---:|---:|---:|---:|---:|"]
    for name, row in ev["scores"].items():
        label = name if row.get("synthetic") else f"{name} (real, local data)"
        lines.append(f"| {label} | {row['metric']} | {row.get('n', '-')} | "
                     + " | ".join(_pct(row.get(k)) for k in MODELS) + " |")
    lines += [""] + _tool_table(ev)
    lines += [f"Reward model, mean score of greedy replies to held-out prompts ({_reward_prompts(ev)}): "
              f"{_reward_chain(ev)}" + "".join(f"; {kind} {_chain(rows, _number)}"
                                                for kind, rows in ev.get("reward_by_kind", {}).items()) + ".", ""]
    refusal = ev.get("refusal")
    if refusal:
        first = next(iter(refusal.values()))
        lines += [(f"Refusals (CyberSecEval's refusal check on greedy chat replies, bootstrap 90% interval) on "
                   f"{first['harmful_refused']['n']} held-out harmful requests and {first['benign_refused']['n']} "
                   "held-out benign look-alikes (wordings SFT and DPO never show)"
                   + (", and as many adversarial ones (other held-out requests in held-out role-play, hypothetical, "
                      "fiction and embedding wrappers)" if "wrapped_harmful_refused" in first else "") + ":"), "",
                  "| | " + " | ".join(LABELS[k] for k in MODELS) + " |", "|---|---:|---:|---:|---:|"]
        for key, label, _ in PAIRED_ROWS:
            if key in first:
                lines.append(f"| {label} | " + " | ".join(_rate(refusal[k][key]) for k in MODELS if k in refusal)
                             + " |")
        lines.append("")
    return lines + _paired_table(ev)


def _safety_section(ctx: RunContext) -> list[str]:
    out = ctx.outputs("safety")
    cs = out["codeshield"]
    lines = ["## Safety (the final model)", "",
             f"- Code Shield over the {cs['n']} functions the DPO model wrote for synth_code: "
             + (", ".join(f"{k} {v}" for k, v in sorted(cs["verdicts"].items())) or "nothing scanned")
             + (f"; rules fired: {', '.join(f'{k} x{v}' for k, v in cs['rules'].items())}" if cs["rules"] else
                "; no rule fired") + "."]
    g = out.get("guard")
    if g is None:
        return lines + ["- Llama Guard: skipped (safety.guard_steps=0); Code Shield only.", ""]
    trained = (f"the speedrun's annealed base fine-tuned by herd guard train's path: {g['train_examples']} generated "
               f"moderation examples, {g['steps']} SFT steps")
    if "held_out" in g:
        q, c = g["held_out"], g["custom_taxonomies"]
        lines += [f"- Llama Guard 2 ({trained}) on {q['n']} held-out examples in new wordings: {headline(q)}.",
                  f"- The same guard under custom category lists ({c['n']} held-out examples): {headline(c)}."]
    else:
        lines += [f"- Llama Guard 2 ({trained}): not scored (safety.guard_eval=0)."]
    lines += [(f"- Moderating the final model on {g['probe_prompts']} held-out requests ({g['harmful_prompts']} "
               f"harmful): inputs flagged {_pct(g['inputs_flagged_harmful'])} of harmful, "
               f"{_pct(g['inputs_flagged_benign'])} of benign; the model's replies flagged unsafe: "
               f"{_pct(g['replies_flagged'])} (replies to benign requests: {_pct(g['replies_to_benign_flagged'])})."),
              ""]
    return lines


def _transcripts(ctx: RunContext) -> list[str]:
    lines = ["## Sample chat transcripts (RUN/final, greedy)", ""]
    for t in ctx.outputs("final")["transcripts"]:
        user, reply = t["messages"][0]["content"], t["messages"][1]["content"]
        lines += ["```", f"user: {user.strip()}", f"assistant: {reply.strip()}", "```", ""]
    return lines
