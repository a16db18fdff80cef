"""The decode step of generation: the next logits for one new token per row through the KV cache, and which
path runs it by default.

Eager it is the model's cached forward (one fp32 row's head through oneDNN where the CPU runs it); compiled it is
`Transformer.decode_step` under torch.compile, with CUDA graphs on GPUs and, on CPUs, the inductor backend of
`herd.model.cpu_tuning`. Inductor caches the compiled kernels on disk (TORCHINDUCTOR_CACHE_DIR, by default
/tmp/torchinductor_<user>), so a later process pays only the tracing (benchmarks/chat_cold_start.py). A step's
first two calls run through dynamo with all its guards; on CPUs the later calls then call the graph herd's decode
backend compiled (inductor's code) themselves, with the arguments dynamo passed it and the new ids, where those two
calls passed the graph the same arguments but the ids (a size dynamo reads from Python state, which a graph
recompiled as dynamic may take, changes between them): the model, cache and shapes are the first call's, and
dynamo's frame evaluation, guards and walk over the model's attributes cost llama3-125m 0.4-0.8 ms of CPU time
a token (1 thread, alternating in one process, loaded machine: int8 7.90 -> 7.06 ms, fp32 18.71 -> 18.01, bf16
9.89 -> 9.47; a 1000-slot cache). Elsewhere (CUDA graphs, the plain path, ids of another layout) the later calls
run only the guards telling dynamo's graphs apart (`torch.compiler.set_stance(skip_guard_eval_unsafe=True)`).
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from herd.model import KVCache, Transformer
from herd.model.cpu_tuning import PLAIN_ENV, capture_decode_graphs, decode_backend, plain_forced

Step = Callable[[torch.Tensor], torch.Tensor]
"""ids [B, 1] -> next-token logits [B, vocab], appending the ids to the cache."""


MIN_COMPILE_WORK = 330e9
"""Bytes of weights read over a call's decode steps (weight bytes x new tokens) from which `auto` compiles when the
step's kernels are in inductor's cache: below it, the tracing a compile costs even then outweighs what the faster
steps save. llama3-125m fp32 (0.49 GB) on 2 quiet AVX-512 cores at 7a14cc0 (benchmarks/llama_cpp_side_by_side.py):
eager 49.7 tok/s, compiled 117.7 (11.6 ms saved a token) against ~7.8 s of tracing (benchmarks/chat_cold_start.py;
~9.5 s of CPU time measured loaded): even at ~670 tokens, 330 GB. (Was 170 GB, from an eager 31 tok/s.)"""

MIN_COMPILE_WORK_COLD = 500e9
"""The same with no cached kernels: the first compile builds them (~20 s more on those 2 cores): even at ~1000
tokens of the 125M."""


def choose_decode_path(model: Transformer, compile: bool | None, new_tokens: int, rows: int = 1) -> tuple[bool, str]:
    """(compile?, why) for a call decoding `new_tokens` tokens for `rows` prompts: `compile` True or False as given,
    None (auto) the fastest correct path here: compiled where torch.compile can build it and the call reads enough
    weights; on CPUs for one row only (llama3-125m, 8 rows, 2 cores: compiled 76 tok/s, eager 153: the one-row
    matmul kernel is what makes the compiled step fast)."""
    if compile is not None:
        return compile, "compiled (asked for)" if compile else "eager (asked for)"
    device = model.tok_embeddings.weight.device
    if model.tp is not None:
        return False, "eager (tensor parallel: its collectives run outside a compiled step)"
    if device.type == "cpu" and plain_forced():
        return False, f"eager ({PLAIN_ENV}={os.environ[PLAIN_ENV]})"
    if device.type == "cpu" and not _cpp_compiler():
        return False, "eager (no C++ compiler for inductor's CPU kernels: install g++)"
    if device.type == "cuda" and not _has_triton():
        return False, "eager (no triton for inductor's GPU kernels)"
    if device.type == "cpu" and rows > 1:
        return False, f"eager ({rows} prompts: on CPUs the compiled step is faster for one)"
    if device.type not in ("cpu", "cuda"):
        return False, f"eager (no compiled step for {device.type})"
    work = new_tokens * sum(p.numel() * p.element_size() for p in model.parameters())
    # the cache is looked at between the two thresholds only: its place is inductor's, whose import takes seconds
    if work < MIN_COMPILE_WORK_COLD and (work < MIN_COMPILE_WORK or not kernels_cached(model, rows)):
        size, cold = work / new_tokens / 1e9, "" if work < MIN_COMPILE_WORK else " with no kernels cached"
        return False, f"eager ({new_tokens} new tokens of a {size:.2f} GB model: too few to pay for a compile{cold})"
    return True, "compiled (CUDA graphs)" if device.type == "cuda" else "compiled (inductor, herd's CPU decode kernels)"


def choose_chat_path(model: Transformer, compile: bool | None) -> tuple[str, str]:
    """(path, why) of a chat session's replies, one row each: "eager", "compiled", or, for `compile` None (auto),
    "background" where a session filling the model's context would compile (`choose_decode_path`): its replies
    decode eagerly until a thread has compiled the step (herd.generation.background_compile), so none waits."""
    if compile is None:
        compiled, why = choose_decode_path(model, None, model.config.max_seq_len)
        if not compiled:
            return "eager", why
        when = "from the first reply on" if spare_core() else "once the first reply is done (no core spare)"
        return "background", f"eager, then compiled: inductor compiles it in a background thread {when}"
    return ("compiled" if compile else "eager"), choose_decode_path(model, compile, 0)[1]


def spare_core() -> bool:
    """Whether the CPU has a core that torch's intra-op threads leave free."""
    return (os.cpu_count() or 1) > torch.get_num_threads()


def describe_decode_path(model: Transformer, compile: bool | None, new_tokens: int, chat: bool = False) -> str:
    """The one line `herd generate | chat` print on stderr: the decode path (`chat`: of a chat session's replies)
    and how to change it."""
    if chat:
        path, why = choose_chat_path(model, compile)
        compiled = path != "eager"
    else:
        compiled, why = choose_decode_path(model, compile, new_tokens)
    cache = f"; kernels cached in {_inductor_cache_dir()}" if compiled else ""
    switch = "--compile off for eager" if compiled else "--compile on to compile"
    return f"herd: decode step {why}{cache} ({switch})"


def make_decode_step(model: Transformer, cache: KVCache, compile: bool) -> Step:
    """The step for `model` writing into `cache` (already prefilled), compiled or not."""
    if not compile:
        # Eager: the cached forward attends to the filled slots only (one row's fp32 head runs through oneDNN:
        # herd.model.cpu_tuning.linear).
        return lambda ids: model(ids, cache=cache)[:, -1]
    device = cache.pad.device
    compiled = _compiled_decode_step(device.type, decode_backend())
    slot = torch.tensor([cache.length], device=device)
    for tensor in cache.keys + cache.values:
        torch._dynamo.mark_dynamic(tensor, 2)  # one graph for every cache length, not one per prompt length
        if device.type == "cuda":
            torch._dynamo.mark_static_address(tensor)  # CUDA graphs write the cache where it is

    cuda, state = device.type == "cuda", ["first"]  # "second", then "direct" or "fast"; "guarded" if "fast" fails
    skip_guards = torch.compiler.set_stance(skip_guard_eval_unsafe=True)  # building it (~55 us) sets the stance:
    skip_guards.__exit__(None, None, None)  # restore it now; entering it in a step then costs ~3 us
    first: list = []  # the first call's graph calls and ids
    direct: list = []  # "direct": [graph, its arguments (a list), where the ids go, their shape, stride, dtype]

    def call(ids: torch.Tensor) -> torch.Tensor:
        return compiled(model, ids, cache, slot)[:, -1]

    def step(ids: torch.Tensor) -> torch.Tensor:
        if cuda:
            torch.compiler.cudagraph_mark_step_begin()
        if state[0] == "direct" and (ids.shape, ids.stride(), ids.dtype) == direct[3]:  # the second call's graph
            graph, args, at, _ = direct
            args[at] = ids
            logits = graph(*args)[0][:, -1]
        elif state[0] in ("fast", "direct"):  # the first call's model, cache, shapes: only guards telling graphs apart
            try:
                with skip_guards:
                    logits = call(ids)
            except RuntimeError:  # they matched no graph (dynamo refuses to recompile so): all guards from now on
                state[0] = "guarded"
                logits = call(ids)
        elif state[0] == "guarded":
            logits = call(ids)
        else:  # "first" (compiled now, its kernels cached on disk), then "second"
            with capture_decode_graphs() as calls:
                full = compiled(model, ids, cache, slot)
            logits = full[:, -1]
            if state[0] == "first":
                first.extend([calls, ids])
                state[0] = "second"
                marker = _marker(model, ids.shape[0])
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()
            else:
                direct.extend(_direct_call(first, [calls, ids], full))
                state[0] = "direct" if direct else "fast"
                first.clear()
        slot.add_(1)
        cache.length += 1
        return logits

    return step


def _direct_call(first: list, second: list, result: torch.Tensor) -> list:
    """[graph, arguments, index of the ids, the ids' shape, strides and dtype] where the step's first two calls
    ([graph calls, ids] each) ran the same graph of herd's CPU decode backend once, with the same arguments but their
    ids, and the second returned the step's result as the graph's only output: later steps call that graph on their
    ids, skipping dynamo (ids of another layout go through dynamo). Empty otherwise (the CUDA backend, the plain
    path, a graph break, or an argument that changed between the calls, as a size dynamo reads from Python state
    would)."""
    (calls, ids), (again, new_ids) = first, second
    if len(calls) != 1 or len(again) != 1 or calls[0][0] is not again[0][0] or len(calls[0][1]) != len(again[0][1]):
        return []
    graph, args, out = again[0]
    at = [i for i, arg in enumerate(args) if arg is new_ids]
    if len(at) != 1 or calls[0][1][at[0]] is not ids or not isinstance(out, list | tuple) or len(out) != 1 \
            or out[0] is not result:
        return []
    same = all(a is b or (type(a) is int and type(b) is int and a == b)
               for i, (a, b) in enumerate(zip(calls[0][1], args, strict=True)) if i != at[0])
    return [graph, list(args), at[0], (new_ids.shape, new_ids.stride(), new_ids.dtype)] if same else []


def kernels_cached(model: Transformer, rows: int) -> bool:
    """Whether a process compiled `model`'s decode step for `rows` rows with this cache directory before, so a compile
    now loads its kernels (inductor's FX-graph cache) and pays only the tracing. herd's own marker beside inductor's
    files, keyed by what shapes the graph; emptying the directory removes both."""
    return _marker(model, rows).exists()


def _marker(model: Transformer, rows: int) -> Path:
    weights = {f"{type(m).__name__}:{t.dtype}" for m in model.modules()
               for t in [*m.parameters(recurse=False), *m.buffers(recurse=False)]}
    device = model.tok_embeddings.weight.device.type
    key = repr((torch.__version__, model.config, sorted(weights), rows, device, decode_backend() == "inductor"))
    return Path(_inductor_cache_dir()) / "herd-decode-steps" / hashlib.sha256(key.encode()).hexdigest()[:24]


@functools.cache
def _compiled_decode_step(device_type: str, backend: str | Callable) -> Callable[..., torch.Tensor]:
    """`Transformer.decode_step` compiled for a device type (on CPU with `backend`); dynamo keeps its graphs
    across calls and models."""
    if device_type == "cuda":
        return torch.compile(Transformer.decode_step, mode="reduce-overhead")
    return torch.compile(Transformer.decode_step, backend=backend)


def _cpp_compiler() -> str | None:
    """The C++ compiler inductor would build CPU kernels with ($CXX, else the first of g++, c++, clang++ found)."""
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
    return next((path for path in map(shutil.which, names) if path), None)


def _has_triton() -> bool:
    from torch.utils._triton import has_triton

    return has_triton()


def _inductor_cache_dir() -> str:
    """Where inductor keeps compiled kernels across processes (its own default when the variable is unset)."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    return os.environ.get("TORCHINDUCTOR_CACHE_DIR") or default_cache_dir()
