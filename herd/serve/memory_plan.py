"""How much device memory each tensor-parallel rank of an inference run needs, printed before loading, failing
fast with what to change when it does not fit (`check_run_memory`: herd serve, generate, chat and eval).

Per rank: the weights (each parameter's local slice by herd.model.tensor_parallel's split, at `dtype`; with
`quantize` the attention, feed-forward and head linears at one byte a weight plus an fp32 scale per local output
channel, as herd.serve.quantize stores them; `herd serve` on a CPU prepacks the linears, which gives a tied head
its own copy, and keeps their plain weights as well where its one-request step may compile: herd.serve.packed),
the KV cache (k and v of every layer for `batch` sequences of `context` tokens, local kv heads only) and a
workspace: one block's transient activations for a forward of `step_tokens` tokens (residual and normed input,
local q/k/v and attention output, the local SwiGLU's three hidden tensors; attention itself is taken as fused, as
SDPA's flash kernels are on GPUs) plus the last positions' full-vocabulary fp32 logits. Allocator slack and the
CUDA context come on top: the plan is a floor.
The free-memory probe is the training estimate's (herd.train.memory_estimate).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from herd.checkpoint import info
from herd.checkpoint.state import expected_shapes
from herd.errors import HerdError
from herd.model import ModelConfig
from herd.model.cpu_tuning import can_prepack
from herd.model.tensor_parallel import check_config, shard_dim
from herd.serve.quantize import QUANTIZED
from herd.train.memory_estimate import GIB, available_bytes

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_QUANTIZED_MODULES = ("attention.w", "feed_forward.w", "output.")
_SCALE_BYTES = 4
Run = Literal["serve", "generate", "eval"]
"""The command a plan is for (chat counts as generate): which of its options the advice may name."""


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per rank of one tensor-parallel inference run, and what one device offers (None: unknown)."""

    tp: int
    dtype: str
    quantize: str | None
    prepacked: bool
    """The linears prepacked for oneDNN (herd.serve.packed)."""
    plain_kept: bool
    """Prepacked linears that keep their plain weights too (for the compiled one-request step)."""
    context: int
    batch: int
    step_tokens: int | None
    """The longest forward's tokens as asked (None: a prefill of batch x context)."""
    weights: int
    kv_cache: int
    workspace: int
    available: int | None

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.workspace

    @property
    def fits(self) -> bool:
        return self.available is None or self.total <= self.available

    def describe(self) -> str:
        """One line: the parts per rank, their sum and what the device has."""
        kind = self.dtype if self.quantize is None else f"{self.quantize} weights, {self.dtype}"
        if self.prepacked:
            kind += ", prepacked linears" + (" and their plain weights" if self.plain_kept else "")
        parts = (f"weights {self.weights / GIB:.1f} + KV cache {self.kv_cache / GIB:.1f} ({self.batch} x "
                 f"{self.context} tokens) + workspace {self.workspace / GIB:.1f} = {self.total / GIB:.1f} GiB")
        have = "" if self.available is None else f" of {self.available / GIB:.1f} GiB"
        return f"per rank at tp {self.tp} ({kind}): {parts}{have}"


def plan_memory(
    config: ModelConfig, *, tp: int = 1, dtype: str = "bfloat16", quantize: str | None = None,
    context: int | None = None, batch: int = 1, step_tokens: int | None = None, available: int | None = None,
    prepacked: bool = False, plain_kept: bool = False,
) -> MemoryPlan:
    """The per-rank plan of `config` over `tp` ranks; `context` defaults to the model's max_seq_len and
    `step_tokens` (the longest forward: a prefill, or a serving step's budget) to batch x context. `prepacked`:
    the linears prepacked (a tied head gets its own copy); `plain_kept`: their plain weights kept as well."""
    if dtype not in DTYPE_BYTES:
        raise HerdError(f"unknown dtype {dtype!r} for the memory plan; use one of: {', '.join(DTYPE_BYTES)}")
    if quantize is not None and quantize not in QUANTIZED:
        raise HerdError(f"unknown quantization {quantize!r}; choose one of: {', '.join(QUANTIZED)}")
    check_config(config, tp)
    context = config.max_seq_len if context is None else context
    size = DTYPE_BYTES[dtype]
    kv_local = config.kv_heads // tp * config.head_dim
    kv_cache = 2 * config.n_layers * batch * context * kv_local * size
    per_token = 2 * config.dim + (config.n_heads // tp * config.head_dim) * 2 + 2 * kv_local
    per_token += 3 * config.ffn_hidden_dim // tp
    tokens = batch * context if step_tokens is None else step_tokens
    workspace = tokens * per_token * size + batch * config.vocab_size * 4
    prepacked = prepacked and quantize is None
    return MemoryPlan(
        tp=tp, dtype=dtype, quantize=quantize, prepacked=prepacked, plain_kept=prepacked and plain_kept,
        context=context, batch=batch, step_tokens=step_tokens, kv_cache=kv_cache, workspace=workspace,
        weights=_weight_bytes(config, tp, size, quantize, prepacked, prepacked and plain_kept), available=available,
    )


def _weight_bytes(
    config: ModelConfig, tp: int, size: int, quantize: str | None, prepacked: bool, plain_kept: bool
) -> int:
    """Bytes of one rank's weights: one block's shapes (from the model itself) times the layer count, plus the rest."""
    shapes = expected_shapes(config.replace(n_layers=1))
    tied = config.tie_word_embeddings
    if (quantize is not None or prepacked) and tied:
        shapes["output.weight"] = shapes["tok_embeddings.weight"]  # quantizing or packing gives a tied head its copy
    total = 0
    for name, shape in shapes.items():
        dim = shard_dim(name)
        numel = shape.numel() // (1 if dim is None else tp)
        linear = name.removeprefix("layers.0.").startswith(_QUANTIZED_MODULES)
        if quantize is not None and linear:
            rows = shape[0] // (tp if dim == 0 else 1)
            nbytes = numel + rows * _SCALE_BYTES
        else:
            # a kept plain weight is a second copy, but a tied head's is the embedding
            copies = 2 if plain_kept and linear and not (tied and name == "output.weight") else 1
            nbytes = numel * size * copies
        total += nbytes * (config.n_layers if name.startswith("layers.") else 1)
    return total


def device_memory(device: torch.device | str, ranks_per_device: int = 1) -> int | None:
    """What one rank may use on `device`: a GPU's free memory, or the host's available memory over the ranks
    that share it (CPU ranks all use the host's)."""
    device = torch.device(device)
    free = available_bytes(device)
    if free is None or device.type == "cuda":
        return free
    return free // ranks_per_device


def check_run_memory(
    model: str, *, tp: int, device: torch.device | str, dtype: torch.dtype | str | None = None,
    quantize: str | None = None, context: int | None = None, batch: int = 1, step_tokens: int | None = None,
    show: bool = True, run: Run = "serve", compile: bool | None = False,
) -> MemoryPlan:
    """Plan a run of `model` (a checkpoint, Hub id or preset: its config read, no weights) over `tp` ranks on
    `device`, print it (`show`: one rank prints) and fail with what to change when it does not fit; dtype None:
    the stored weights' dtype. `run`: the command whose options the advice names; for "generate" (chat too) and
    "eval", runs of one sequence, `context` is its tokens (prompt and reply), capped at the model's context as
    generation cuts it (serve passes its KV pool's tokens). A serve run on a CPU whose oneDNN takes the dtype
    prepacks its linears, keeping their plain weights where its one-request step may compile (`compile` True, or
    None: auto, at tp 1)."""
    facts = info(model)
    config = ModelConfig.from_params(facts["config"])
    if run != "serve" and context is not None:
        context = min(context, config.max_seq_len)
    name = str(dtype or facts["dtype"]).removeprefix("torch.")
    device = torch.device(device)
    available = device_memory(device, 1 if device.type == "cuda" else tp)
    name = name if name in DTYPE_BYTES else "float32"
    prepacked = run == "serve" and quantize is None and device.type == "cpu" and can_prepack(
        torch.empty(0, dtype=getattr(torch, name)))
    plan = plan_memory(config, tp=tp, dtype=name, quantize=quantize, context=context, batch=batch,
                       step_tokens=step_tokens, available=available, prepacked=prepacked,
                       plain_kept=compile or (compile is None and tp == 1))  # auto: eager under tp
    check_plan(config, plan, show=show, run=run)
    return plan


def check_plan(config: ModelConfig, plan: MemoryPlan, *, show: bool = True, run: Run = "serve") -> None:
    """Print `config`'s plan on stderr (`show`); raise a one-line HerdError naming what would make it fit when it
    does not, in `run`'s options."""
    if show:
        print(f"memory plan {plan.describe()}", file=sys.stderr, flush=True)
    if plan.fits:
        return
    options = _remedies(config, plan, run)
    advice = "; ".join(options) if options else "no setting at this model size fits; use devices with more memory"
    raise HerdError(f"the model does not fit: {plan.describe()}; {advice}")


def _remedies(config: ModelConfig, plan: MemoryPlan, run: Run) -> list[str]:
    """Each single change that makes `plan` fit, among `run`'s options: more ranks, int8/fp8 weights (serve) or bf16
    ones (generate), a shorter context (serve) or prompt and reply (generate), a smaller batch (serve)."""
    settings = {"tp": plan.tp, "dtype": plan.dtype, "quantize": plan.quantize, "context": plan.context,
                "batch": plan.batch, "step_tokens": plan.step_tokens, "available": plan.available,
                "prepacked": plan.prepacked, "plain_kept": plan.plain_kept}

    def fits(**change: object) -> bool:
        try:
            return plan_memory(config, **{**settings, **change}).fits
        except HerdError:  # a tp that does not divide the heads
            return False

    options = []
    more = next((tp for tp in (2 * plan.tp, 4 * plan.tp, 8 * plan.tp) if fits(tp=tp)), None)
    if more is not None:
        options.append(f"use {more} ranks (--tp {more})")
    if run == "generate" and plan.dtype == "float32" and fits(dtype="bfloat16"):
        options.append("cast the weights to bfloat16 (--dtype bfloat16)")
    if plan.plain_kept and fits(plain_kept=False):
        options.append("serve the one-request step eager (--compile off): no plain copy of the weights")
    if plan.quantize is None and run == "serve":
        kinds = [kind for kind in QUANTIZED if fits(quantize=kind)]
        if kinds:
            options.append(f"store weights as {' or '.join(kinds)} (--quantize)")
    context = 0 if run == "eval" else _largest(lambda c: fits(context=c), plan.context - 1)
    if context:
        options.append(f"shorten the {'prompt and reply' if run == 'generate' else 'context'} to <= {context} tokens")
    batch = _largest(lambda b: fits(batch=b), plan.batch - 1) if run == "serve" else 0
    if batch:
        options.append(f"lower the batch to <= {batch}")
    return options


def _largest(fits: Callable[[int], bool], high: int) -> int:
    """The largest n in 1..high with fits(n) (monotone: smaller fits too), 0 when none does."""
    low = 0
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low
