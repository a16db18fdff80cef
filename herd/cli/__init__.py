"""The `herd` command: parses arguments and calls one function per subcommand.

Each family of subcommands is a module here, holding for each subcommand an `add_NAME(commands)` that declares its
arguments next to the `cmd_*` function it runs. A `cmd_*` imports what it needs when it runs, so `herd --help`
and argument errors never load torch. Errors a user can cause end in one line on stderr and exit status 2.
"""

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Sequence

from herd.cli import data, evals, models, safety, serve, stages
from herd.errors import HerdError

SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    stages.add_speedrun, models.add_generate, models.add_chat, models.add_convert, data.add_tokenizer,
    data.add_tokenize, data.add_data, stages.add_scaling, stages.add_stages, models.add_average,
    evals.add_eval, evals.add_eval_pairwise, serve.add_serve, safety.add_guard, safety.add_codeshield,
    safety.add_cyberseceval, models.add_info,
)
"""Every subcommand, in the order `herd --help` lists them."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="herd", description="The whole Llama 3 system, PyTorch-native.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], None] = args.run
    try:
        with warnings.catch_warnings():  # restores Python's own warning display when done
            warnings.showwarning = _show_warning
            run(args)
        sys.stdout.flush()  # a closed pipe raises here, not at exit where it cannot be caught
    except HerdError as error:
        # one write for the whole line: stderr writes through, and print() writes the text and its newline apart, so
        # the error lines of ranks sharing a terminal could run together
        sys.stderr.write(f"herd: error: {error}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:  # the reader left (`herd ... | head`): stop quietly, as Python's docs on SIGPIPE advise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


def _show_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
    """A warning as one line on stderr (`herd: warning: ...`), not Python's file:line and source line."""
    print(f"herd: warning: {message}", file=sys.stderr)
