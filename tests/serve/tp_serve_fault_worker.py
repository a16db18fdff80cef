"""`herd serve` as one torchrun rank, with every engine step failing on rank 0 (fault injection for
test_serve_tp: rank 0's engine failing mid-serve)."""

import os
import sys

from herd.cli import main
from herd.serve.engine import Engine


def _failing_step(_engine: Engine) -> list:
    raise RuntimeError("injected step failure")


if __name__ == "__main__":
    if os.environ["RANK"] == "0":
        Engine.step = _failing_step
    main(sys.argv[1:])
