"""`herd generate | chat | convert | average | info`: commands on one model or checkpoint."""

import argparse
import contextlib
import json
import os
import sys

DTYPES = ("float32", "bfloat16", "float16")
COMPILE = {"auto": None, "on": True, "off": False}
"""--compile's choices: the `compile` argument of herd.generate each stands for."""


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a Meta, HF or herd directory, a Hub id, or a preset name")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--dtype", choices=DTYPES, default=None, help="cast the weights (default: as stored)")
    parser.add_argument("--tp", type=int, default=1,
                        help="tensor-parallel ranks: torchrun --nproc-per-node N -m herd.cli ... --tp N")


def _add_sampling_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-new-tokens", type=int, default=256, help="(default: %(default)s)")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="sampling temperature (default: %(default)s, greedy decoding)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling (default: %(default)s, no cut)")
    parser.add_argument("--top-k", type=int, default=0, help="0 means no top-k cut")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", choices=tuple(COMPILE), default="auto",
                        help="the decode step: auto (compiled where it pays, cached across runs), on, or off (eager); "
                        "stderr says which runs (default: %(default)s)")


def model_device(name: str | None) -> str:
    """--device's value: cuda when there is a GPU unless one is named; one torch cannot parse, or a GPU not visible
    here, is a one-line HerdError naming --device."""
    import torch

    from herd.errors import HerdError

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise HerdError(f"--device {name} is not a device torch knows; use cpu, cuda or cuda:N") from None
    gpus = torch.cuda.device_count()
    if device.type == "cuda" and (device.index or 0) >= gpus:
        raise HerdError(f"--device {name} but {gpus} CUDA GPU(s) are visible; use --device cpu or a visible GPU")
    return name


def _load(args: argparse.Namespace, tokens: int):
    """The model (this rank's slice under --tp N) and its tokenizer, after the per-rank memory plan of one sequence
    of `tokens` (capped at the model's context) is printed and found to fit (herd.serve.memory_plan)."""
    import torch

    import herd
    from herd.model.tensor_parallel import init_tensor_parallel, tp_device
    from herd.serve.memory_plan import check_run_memory

    tp = init_tensor_parallel(  # each rank checks the model before it joins
        args.tp, model_device(args.device), before_joining=lambda device, lead: check_run_memory(
            args.model, tp=args.tp, device=device, dtype=args.dtype, context=tokens, run="generate", show=lead))
    device = tp_device(tp, model_device(args.device))
    dtype = getattr(torch, args.dtype) if args.dtype else None
    return herd.load(args.model, device=device, dtype=dtype, tp=tp)


class _RankZeroLines:
    """Rank 0's stdin on every tensor-parallel rank, a line at a time (each rank runs the same chat)."""

    def __init__(self, stdin, tp) -> None:  # noqa: ANN001 - a TextIO and a TensorParallel
        self.stdin, self.tp = stdin, tp

    def isatty(self) -> bool:
        return self.tp.broadcast_object(self.stdin.isatty() if self.tp.rank == 0 else None)

    def readline(self) -> str:
        return self.tp.broadcast_object(self.stdin.readline() if self.tp.rank == 0 else None)


def _sampling(args: argparse.Namespace, model, chat: bool = False) -> dict:  # noqa: ANN001 - a Transformer
    """The sampling and decode-path options; says on stderr (rank 0) which decode path runs (`chat`: a session's)."""
    from herd.generation.decode_step import describe_decode_path

    compile = COMPILE[args.compile]
    if model.tp is None or model.tp.rank == 0:
        print(describe_decode_path(model, compile, args.max_new_tokens, chat=chat), file=sys.stderr, flush=True)
    return dict(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        seed=args.seed, compile=compile,
    )


def add_generate(commands: argparse._SubParsersAction) -> None:
    gen = commands.add_parser("generate", help="complete a prompt")
    _add_model_args(gen)
    gen.add_argument("--prompt", required=True, help="the prompt text, or - to read it from stdin")
    gen.add_argument("--stop", action="append", help="a stop string (repeatable)")
    gen.add_argument("--chat", action="store_true", help="wrap the prompt as a user turn in the chat format")
    _add_sampling_args(gen)
    gen.set_defaults(run=cmd_generate)


def cmd_generate(args: argparse.Namespace) -> None:
    import herd
    from herd.model.tensor_parallel import init_tensor_parallel

    prompt = args.prompt
    if prompt == "-":  # rank 0 reads it: the ranks join first, to share it (else they join once the model checks)
        tp = init_tensor_parallel(args.tp, model_device(args.device))
        prompt = sys.stdin.read() if tp is None or tp.rank == 0 else None
        prompt = prompt if tp is None else tp.broadcast_object(prompt)
    model, tok = _load(args, len(prompt.encode()) + args.max_new_tokens)  # a byte-level BPE: tokens <= bytes
    tp = model.tp
    shown = tp is None or tp.rank == 0  # every rank generates, rank 0 prints
    herd.generate(
        model, tok, prompt, stop=args.stop or None, chat=args.chat, **_sampling(args, model),
        on_text=lambda _row, piece: shown and print(piece, end="", flush=True),
    )
    if shown:
        print()
    if tp is not None:
        tp.close()


def add_chat(commands: argparse._SubParsersAction) -> None:
    chat = commands.add_parser("chat", help="talk to a model in the Llama 3 chat format (reads stdin)")
    _add_model_args(chat)
    chat.add_argument("--system", default=None, help="a system prompt")
    chat.add_argument("--tools", default=None,
                      help="tools the model may call, comma-separated: python (code in herd's sandbox), calculator, "
                           "wolfram_alpha (Llama 3.1's built-in math tool, answered by the calculator)")
    chat.add_argument("--max-tool-rounds", type=int, default=3,
                      help="rounds of tool calls per reply at most (default: %(default)s)")
    _add_sampling_args(chat)
    chat.set_defaults(run=cmd_chat)


def cmd_chat(args: argparse.Namespace) -> None:
    from herd.chat import run_chat

    if args.tools:  # a misspelt tool fails before the model loads
        from herd.eval.tool_use import resolve_tools

        resolve_tools(args.tools)
    model, tok = _load(args, len((args.system or "").encode()) + args.max_new_tokens)  # the first reply's floor
    tp, stdin = model.tp, sys.stdin if model.tp is None else _RankZeroLines(sys.stdin, model.tp)
    with open(os.devnull, "w") if tp and tp.rank else contextlib.nullcontext(sys.stdout) as out:
        run_chat(model, tok, stdin, out, system=args.system, tools=args.tools or (),
                 max_tool_rounds=args.max_tool_rounds, **_sampling(args, model, chat=True))
    if tp is not None:
        tp.close()


def add_convert(commands: argparse._SubParsersAction) -> None:
    convert = commands.add_parser("convert", help="convert a checkpoint between formats")
    convert.add_argument("--model", required=True, help="the checkpoint to read (any format herd.load takes)")
    convert.add_argument("--to", required=True, choices=("herd", "hf", "meta", "gguf"))
    convert.add_argument("--out", required=True, help="output directory (the .gguf file for --to gguf)")
    convert.add_argument(
        "--outtype", choices=("f32", "f16", "bf16", "q8_0"), help="GGUF tensor type (default: the stored dtype)"
    )
    convert.add_argument("--dtype", choices=DTYPES, default=None, help="cast the weights (default: as stored)")
    convert.set_defaults(run=cmd_convert)


def cmd_convert(args: argparse.Namespace) -> None:
    from herd.checkpoint import convert

    out = convert(args.model, args.out, to=args.to, dtype=args.dtype, outtype=args.outtype)
    print(f"wrote {args.to} checkpoint to {out}")


def add_average(commands: argparse._SubParsersAction) -> None:
    average = commands.add_parser("average", help="average the weights of several checkpoints")
    average.add_argument("models", nargs="+", help="checkpoint directories of one architecture")
    average.add_argument("--out", required=True, help="output directory")
    average.set_defaults(run=cmd_average)


def cmd_average(args: argparse.Namespace) -> None:
    from herd.post.averaging import average_checkpoints

    print(f"wrote the average of {len(args.models)} checkpoints to {average_checkpoints(args.models, args.out)}")


def add_info(commands: argparse._SubParsersAction) -> None:
    info = commands.add_parser("info", help="describe a checkpoint or preset")
    info.add_argument("model")
    info.add_argument("--json", action="store_true")
    info.set_defaults(run=cmd_info)


def cmd_info(args: argparse.Namespace) -> None:
    from herd.checkpoint import info

    details = info(args.model)
    if args.json:
        print(json.dumps(details, indent=2, default=str))
        return
    width = max(len(k) for k in details)
    for key, value in details.items():
        print(f"{key:<{width}}  {value}")
