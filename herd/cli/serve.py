"""`herd serve`: the OpenAI-compatible server."""

from __future__ import annotations

import argparse
import os

from herd.cli.models import COMPILE, model_device


def add_serve(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="an OpenAI-compatible server with a web chat at /")
    serve.add_argument("--model", required=True, help="a Meta, HF or herd directory, a Hub id, or a preset name")
    serve.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key", default=None,
                       help="require this bearer key (401 otherwise); `ps` shows it: prefer --api-key-file or "
                       "$HERD_API_KEY")
    serve.add_argument("--api-key-file", default=None, help="require the key held in this file")
    serve.add_argument("--max-body-bytes", type=int, default=None, help="larger request bodies get 413 (default 4 MiB)")
    serve.add_argument("--header-timeout", type=float, default=None,
                       help="seconds a client gets to send a request's headers (default 10)")
    serve.add_argument("--max-running", type=int, default=32, help="requests decoding together")
    serve.add_argument("--max-queue", type=int, default=64, help="waiting requests before 429")
    serve.add_argument("--max-prompt-tokens", type=int, default=None, help="longer prompts get 400")
    serve.add_argument("--quantize", choices=("int8", "fp8"), default=None, help="int8 or fp8 weight-only linears")
    serve.add_argument("--compile", choices=tuple(COMPILE), default="auto",
                       help="one request's decode step: auto (compiled at start-up where it pays, cached across runs), "
                       "on, or off (eager); stderr says which serves (default: %(default)s)")
    serve.add_argument("--guard", default=None, help="a Llama Guard model checking each user turn and reply")
    serve.add_argument("--code-shield", action="store_true", help="refuse replies whose code Code Shield blocks")
    serve.add_argument("--web-tools", default="calculator",
                       help="tools the web chat may run here, comma-separated: calculator, python (runs the model's "
                       "code in herd's sandbox on this machine); '' for none (default: %(default)s)")
    serve.add_argument("--tp", type=int, default=1,
                       help="tensor-parallel ranks: torchrun --nproc-per-node N -m herd.cli serve ... --tp N")
    serve.set_defaults(run=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> None:
    from herd.cli.openmp import choose_wait_policy

    wait_policy = choose_wait_policy()  # before the imports below load torch, and libgomp
    from herd.serve.config import EngineConfig
    from herd.serve.server import resolve_api_key, serve
    from herd.serve.tool_runner import check_tools

    web_tools = check_tools([name.strip() for name in args.web_tools.split(",") if name.strip()])
    limits = {name: getattr(args, name) for name in ("max_body_bytes", "header_timeout")
              if getattr(args, name) is not None}
    serve(
        args.model, args.host, args.port, resolve_api_key(args.api_key, args.api_key_file),
        engine_config=EngineConfig(max_running=args.max_running, compile=COMPILE[args.compile]),
        max_queue=args.max_queue, max_prompt_tokens=args.max_prompt_tokens, quantize=args.quantize,
        guardrails=load_guardrails(args, int(os.environ.get("RANK", "0"))), tp=args.tp, web_tools=web_tools,
        device=model_device(args.device), wait_policy=wait_policy, **limits,
    )


def load_guardrails(args: argparse.Namespace, rank: int):  # noqa: ANN201 - a Guardrails (FastAPI imported late)
    """--guard / --code-shield's checks, loaded on rank 0 alone and on the serve --device: under --tp N the guard
    runs beside the scheduler and the HTTP server, so the other ranks load no guard model."""
    if rank != 0 or not (args.guard or args.code_shield):
        return None
    from herd.serve.guardrails import Guardrails

    return Guardrails.load(args.guard, code_shield=args.code_shield, device=model_device(args.device))
