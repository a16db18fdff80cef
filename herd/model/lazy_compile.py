"""torch.compile at first use, once per function.

Compiling at import would cost every herd command torch.compile's own import (seconds), though most never run the
compiled code.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch


@functools.cache
def compiled(function: Callable, dynamic: bool | None = False) -> Callable:
    """`function` compiled, built at its first call and shared from then on. dynamic: as torch.compile's (False: one
    graph per input shape; None: static first, then dynamic in the dims that changed)."""
    return torch.compile(function, dynamic=dynamic)
