"""Ray as the executor's task runner: the same shard tasks as Ray tasks, on a running cluster or a local instance.

Markers, stats and decisions stay files under the output directory, so a cluster needs it on a shared filesystem.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def ray_task_map(workers: int, address: str | None = None) -> Iterator[Callable[..., Iterator[Any]]]:
    """A task map (function, arguments) -> results as they finish, each call a Ray task of one CPU.

    Uses the Ray instance this process already joined; else connects to `address`; else starts a local
    instance of `workers` CPUs, shut down on exit.
    """
    try:
        import ray
    except ImportError:
        raise ImportError("executor: ray needs Ray: pip install 'ray>=2.9'") from None
    started = not ray.is_initialized()
    if started and address:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    elif started:
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)

    def task_map(function: Callable[[Any], Any], arguments: list[Any]) -> Iterator[Any]:
        remote = ray.remote(num_cpus=1, max_retries=0)(function)
        pending = [remote.remote(args) for args in arguments]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])

    try:
        yield task_map
    finally:
        if started:
            ray.shutdown()
