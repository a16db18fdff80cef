"""The serving engine's compiled step: the next-token logits of one running request, on the paged cache.

When a step holds a single decode (one client, or the last request of a batch), the engine runs it through
`Transformer.forward` compiled as herd.generation's decode step is (inductor with herd's CPU decode kernels, cached
across runs), with `PagedContext` on the request's blocks. Every shape but the block table's width is fixed, and
that width is dynamic: one graph serves every context length. Steps of several rows stay eager: on CPUs the
compiled step is fast through its one-row matmul kernel, and the prepacked linears win at several rows
(herd.generation.decode_step.choose_decode_path). int8 weight-only linears compile too (herd's decode backend
decomposes their matmul); fp8 ones stay eager. Sampling, grammar masks and logprobs are the engine's, on these
logits as on the eager ones. Once dynamo has called the step's graph for a block-table width, the step calls that
graph itself for that width (llama3-125m int8, 1 thread, a 12-block table: 7.23 -> 6.55 ms of CPU time a step,
alternating in one process on a loaded machine).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from herd.errors import HerdError
from herd.generation.decode_step import choose_decode_path
from herd.model import Transformer
from herd.model.cpu_tuning import capture_decode_graphs, decode_backend
from herd.serve.packed import PackedLinear, pack_linears
from herd.serve.paged_cache import PagedContext, PagedGroup, PagedKV
from herd.serve.quantize import Fp8Linear
from herd.serve.quantize import quantize as quantize_linears


def choose_serve_path(model: Transformer, compile: bool | None) -> tuple[bool, str]:
    """(compile?, why) for the one-request step of an engine serving `model`: `compile` True or False as given, None
    (auto) where herd.generate would compile a request filling the model's context. Plain linears (`nn.Linear`,
    `PackedLinear` that kept its weight) and int8 ones compile (the decode backend decomposes the int8 matmul);
    fp8 ones and prepacked ones without their plain weight stay eager. Decide before packing (`prepare_linears`):
    a model packed without its plain weights no longer tells why."""
    if compile is False:
        return False, "eager (asked for)"
    held = _uncompilable(model)
    if held is not None:
        if compile:
            raise HerdError(f"the serving step cannot compile: {held}; serve without --compile on")
        return False, f"eager ({held})"
    return choose_decode_path(model, compile, model.config.max_seq_len)


def prepare_linears(model: Transformer, compile: bool | None, quantize: str | None = None) -> tuple[bool, str]:
    """Make `model`'s linears what the engine serves (`quantize`: weight-only "int8"/"fp8"; otherwise prepacked on
    CPU, keeping the plain weights only where the one-request step compiles); returns `choose_serve_path`'s
    decision, taken before packing, for `Engine(path=...)`."""
    if quantize is not None:
        quantize_linears(model, quantize)
        return choose_serve_path(model, compile)
    compiled, why = choose_serve_path(model, compile)
    pack_linears(model, keep_weights=compiled)
    return compiled, why


def _uncompilable(model: Transformer) -> str | None:
    """Why the compiled step cannot take `model`'s linears (`Transformer.replace_linears` replaces all of them alike),
    None when it can."""
    head = model.output
    if isinstance(head, Fp8Linear):
        return "its linears hold fp8 weights"
    if isinstance(head, PackedLinear) and head.weight is None:
        return "its linears are prepacked without their plain weights"
    return None


class CompiledStep:
    """`step(token, position, blocks)`: logits [1, vocab] of one request's token at `position`, its keys and values
    written into its `blocks` of `kv`."""

    def __init__(self, model: Transformer, kv: PagedKV) -> None:
        self.model, self.kv = model, kv
        self.device = model.rope_freqs.device
        self._compiled = _compiled_step(decode_backend() if self.device.type == "cpu" else "inductor")
        self._state = "first"
        """Then "fast": calls run only the guards telling dynamo's graphs apart (the first call's model, cache and
        shapes: as herd.generation's compiled step, ~0.3 ms a token of llama3-125m on one core); "guarded" once a
        fast call found no graph."""
        self._skip_guards = torch.compiler.set_stance(skip_guard_eval_unsafe=True)  # building it takes ~55 us:
        self._skip_guards.__exit__(None, None, None)  # restore the stance now; entering it in a step costs ~3 us
        self._direct: dict[int, tuple[Callable, list, list[int]]] = {}
        """Block-table width -> (the graph of herd's CPU decode backend dynamo called for it, the arguments it passed,
        where the token, table and position go): later calls of that width call the graph themselves, skipping
        dynamo, as herd.generation's compiled step does after its first call."""

    def warm_up(self) -> None:
        """Compile (or load from inductor's cache) now, writing only into block 0's first slot (call before any
        request holds blocks)."""
        self(0, 0, [0])

    @torch.inference_mode()
    def __call__(self, token: int, position: int, blocks: list[int]) -> torch.Tensor:
        width = max(2, position // self.kv.block_size + 1)  # width 1 would be specialised: a second graph
        table = torch.zeros(width, dtype=torch.long)
        table[: min(width, len(blocks))] = torch.tensor(blocks[:width], dtype=torch.long)
        table = table.to(self.device)
        ids, where = torch.tensor([[token]], device=self.device), torch.tensor([position], device=self.device)
        direct = self._direct.get(width)
        if direct is not None:  # the graph dynamo called for this width, on this call's tensors
            graph, args, at = direct
            for i, tensor in zip(at, (ids, table, where), strict=True):
                args[i] = tensor
            return graph(*args)[0]
        torch._dynamo.mark_dynamic(table, 0)
        args = (self.model, ids, self.kv, table, where)
        with capture_decode_graphs() as calls:
            logits = self._dynamo_call(args)
        if self._state != "guarded" and len(calls) == 1:
            graph, graph_args, out = calls[0]
            at = [i for tensor in (ids, table, where) for i, arg in enumerate(graph_args) if arg is tensor]
            if len(at) == 3 and isinstance(out, list | tuple) and len(out) == 1 and out[0] is logits:
                self._direct[width] = (graph, list(graph_args), at)
        return logits

    def _dynamo_call(self, args: tuple) -> torch.Tensor:
        if self._state == "fast":
            try:
                with self._skip_guards:
                    return self._compiled(*args)
            except RuntimeError:  # no graph matched (dynamo refuses to recompile so): every guard from now on
                self._state = "guarded"
                self._direct.clear()
        logits = self._compiled(*args)
        self._state = "fast" if self._state == "first" else self._state
        return logits


def paged_decode(
    model: Transformer, ids: torch.Tensor, kv: PagedKV, blocks: torch.Tensor, position: torch.Tensor
) -> torch.Tensor:
    """Logits [1, vocab] of token `ids` [1, 1] at `position` [1] in the request's `blocks` [W]: the keys past the
    position (unwritten slots, the padding block) masked."""
    size = kv.block_size
    write = blocks[position // size] * size + position % size
    length = blocks.shape[0] * size
    mask = (torch.arange(length, device=blocks.device) <= position)[None, None, None]
    context = PagedContext(kv, position, [PagedGroup(write[None], blocks[None], length, mask)])
    return model(ids, context=context)[0]


@functools.cache
def _compiled_step(backend: str | Callable) -> Callable[..., torch.Tensor]:
    """`paged_decode` compiled with `backend`; dynamo keeps its graphs across engines."""
    return torch.compile(paged_decode, backend=backend)
