"""The engine behind an asyncio server: one thread steps it (a background one, or `run`'s caller); requests talk to it
through queues.

Commands (add, abort) go to the thread on a thread-safe queue; each group of requests gets its outputs on an
asyncio queue of its own. Leaving the output iterator early (a client gone, a task cancelled) aborts what
is left of the group, which frees its cache blocks. A request that fails fails alone; should the thread
itself end (stopped, or killed by an error), every request it held fails and later ones are refused at once.
Under tensor parallelism a failed step ends the thread: the other ranks may be mid-step, so no step can follow.

`herd serve` steps the engine on the thread that loaded and compiled the model instead (`run`), the HTTP server on
another. Each thread that runs torch's CPU kernels gets an OpenMP team of its own, and once a process holds more
OpenMP threads than cores libgomp stops spinning at its barriers: it sleeps and wakes at each of a step's parallel
regions. Stepping on a thread of its own, llama3-125m's compiled step slept ~105 times a token on 2 cores (on the
one team, as `herd generate`: 0-3 times): the serving path's one difference from generate's that showed in a
profile, for the ~6.5 ms a token the quiet side-by-side found (TPOT 15.0 ms against generate's 8.5). Spinning
threads lose where the cores are oversubscribed: there `herd serve` has them sleep (OMP_WAIT_POLICY=PASSIVE, chosen at
start-up by herd.cli.openmp).
Other torch work of the server (a guard model's forward passes) goes through `call`, which runs it on the engine's
thread between two steps, so the process keeps one team.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TypeVar

from herd.errors import HerdError
from herd.serve.engine import Engine
from herd.serve.metrics import ServerMetrics
from herd.serve.request import RequestParams, StepOutput

log = logging.getLogger(__name__)
T = TypeVar("T")


class EngineBusy(HerdError):
    """The server holds as many requests as it accepts; the client should retry later."""


class EngineFailed(RuntimeError):
    """The engine raised while running a request; that request (or the step's requests) was dropped."""


class EngineStopped(EngineFailed):
    """The engine thread is not running (stopped, or ended by an error); no request can run."""


@dataclass
class _Group:
    loop: asyncio.AbstractEventLoop
    outputs: asyncio.Queue
    index: dict[str, int]
    """Request id -> its position in the group."""


class AsyncEngine:
    """Runs `engine` in a thread; `submit` queues a group of requests (one per choice) and streams their outputs."""

    def __init__(self, engine: Engine, *, max_pending: int, metrics: ServerMetrics | None = None) -> None:
        self.engine = engine
        self.max_pending = max_pending
        """Most requests accepted at once (running plus waiting); beyond it `generate` raises EngineBusy."""
        self.metrics = metrics
        self.pending = 0
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._groups: dict[str, _Group] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stepping_here = False
        """Whether `run` steps the engine on its caller's thread."""
        self.stopped: str | None = "the engine has not started"
        """Why the engine thread is not running; None while it runs."""
        self.on_stop: Callable[[BaseException | None], None] | None = None
        """Called on the engine thread as it ends, with the error that ended it (None when stopped)."""

    def start(self) -> None:
        """Accept requests and step the engine on a background thread (nothing more while `run` steps it)."""
        self.stopped = None
        if self._stepping_here:
            return
        self._thread = threading.Thread(target=self._run, name="herd-engine", daemon=True)
        self._thread.start()

    def run(self, serve: Callable[[], None]) -> None:
        """Step the engine on this thread while `serve` (the HTTP server) runs on a new one, until `stop`, which `serve`
        ending calls too; returns once both have ended. Call it instead of `start`, on the thread whose torch ops
        loaded the model (see the module's docstring)."""
        self.stopped, self._stepping_here = None, True

        def host() -> None:
            try:
                serve()
            finally:
                self.stop()

        http = threading.Thread(target=host, name="herd-http", daemon=True)
        http.start()
        self._run()
        http.join()

    def stop(self) -> None:
        if self._stepping_here:  # its loop ends at this message
            self._commands.put(None)
        elif self._thread is not None:
            self._commands.put(None)
            self._thread.join()
            self._thread = None

    def submit(self, requests: list[tuple[list[int], RequestParams]]) -> AsyncIterator[tuple[int, StepOutput]]:
        """Queue a group of requests (HerdError if one cannot run or the group is over `max_pending`, EngineBusy
        beyond the limit, EngineStopped when the engine is not running); iterate the result for (index in
        `requests`, output) until all have finished. Leaving it early aborts the rest."""
        if self.stopped is not None:
            raise EngineStopped(self.stopped)
        if len(requests) > self.max_pending:
            raise HerdError(f"the request holds {len(requests)} choices (prompts x n), over this server's limit of "
                            f"{self.max_pending} per request; split it into smaller requests")
        for prompt, params in requests:
            self.engine.check(prompt, params)
        if self.pending + len(requests) > self.max_pending:
            raise EngineBusy(f"the server is at its limit of {self.max_pending} requests; retry later")
        group = _Group(asyncio.get_running_loop(), asyncio.Queue(), {})
        with self._lock:  # the engine thread marks itself stopped under this lock, then fails the groups it sees
            if self.stopped is not None:
                raise EngineStopped(self.stopped)
            for i in range(len(requests)):
                request_id = uuid.uuid4().hex
                group.index[request_id] = i
                self._groups[request_id] = group
        self.pending += len(requests)
        for request_id, (prompt, params) in zip(group.index, requests, strict=True):
            self._commands.put(("add", request_id, prompt, params))
            if self.metrics:
                self.metrics.prompt_tokens.inc(len(prompt))
        return self._outputs(group)

    async def call(self, fn: Callable[[], T]) -> T:
        """`fn()` run on the engine's thread between two of its steps (torch work sharing the engine's OpenMP team):
        its result, or its error; EngineStopped when the engine is not running."""
        future = asyncio.get_running_loop().create_future()
        with self._lock:  # the engine thread marks itself stopped under this lock, then fails the calls it holds
            if self.stopped is not None:
                raise EngineStopped(self.stopped)
            self._commands.put(("call", future, fn))
        return await future

    async def _outputs(self, group: _Group) -> AsyncIterator[tuple[int, StepOutput]]:
        live = set(group.index)
        start = time.perf_counter()
        last = dict.fromkeys(live, start)
        try:
            while live:
                out = await group.outputs.get()
                if isinstance(out, BaseException):
                    raise out
                if out.finish_reason:
                    live.discard(out.request_id)
                if self.metrics:
                    self.metrics.observe(out, first=last[out.request_id] == start, since=last[out.request_id])
                last[out.request_id] = time.perf_counter()
                yield group.index[out.request_id], out
        finally:
            self.pending -= len(group.index)
            for request_id in live:
                self._commands.put(("abort", request_id))
                if self.metrics:
                    self.metrics.finished.labels("abort").inc()
            with self._lock:
                for request_id in group.index:
                    self._groups.pop(request_id, None)

    def _run(self) -> None:
        """The engine thread; when it ends, for whatever reason, every request it holds fails."""
        reason, failure = "the engine stopped: the server is shutting down", None
        try:
            self._loop()
        except BaseException as error:
            log.exception("the engine thread died")
            reason = f"the engine stopped after an error ({type(error).__name__}: {error}); restart the server"
            failure = error
        finally:
            with self._lock:
                self.stopped = reason
                request_ids = list(self._groups)
            for request_id in request_ids:
                self._deliver(request_id, EngineStopped(reason))
            while True:  # the calls no step will reach
                try:
                    command = self._commands.get_nowait()
                except queue.Empty:
                    break
                if command is not None and command[0] == "call":
                    _settle(command[1], error=EngineStopped(reason))
            if self.on_stop is not None:
                self.on_stop(failure)

    def _loop(self) -> None:
        """Apply commands (waiting for one when idle), step, hand out the outputs, until told to stop."""
        while True:
            try:
                command = self._commands.get(block=not self.engine.has_unfinished())
            except queue.Empty:
                command = ()
            while command != ():
                if command is None:
                    return
                self._apply(command)
                try:
                    command = self._commands.get_nowait()
                except queue.Empty:
                    command = ()
            if self.engine.has_unfinished():
                try:
                    outputs = self.engine.step()
                except Exception as error:
                    if self.engine.model.tp is not None:
                        raise
                    log.exception("engine step failed; dropping its requests")
                    self._fail_all(EngineFailed(f"the engine failed: {error}"))
                    continue
                for out in outputs:
                    self._deliver(out.request_id, out)

    def _apply(self, command: tuple) -> None:
        if command[0] == "call":
            _, future, fn = command
            if future.cancelled():  # its caller has gone
                return
            try:
                _settle(future, fn())
            except Exception as error:  # the caller's to handle
                _settle(future, error=error)
            return
        kind, request_id, *args = command
        if kind == "abort":
            self.engine.abort(request_id)
            return
        try:
            self.engine.add_request(request_id, *args)
        except HerdError as error:
            self._deliver(request_id, error)
        except Exception as error:  # a bug or an unforeseen input fails this request, not the engine
            log.exception("adding request %s failed", request_id)
            self._deliver(request_id, EngineFailed(f"the request failed: {type(error).__name__}: {error}"))

    def _fail_all(self, error: Exception) -> None:
        with self._lock:
            request_ids = list(self._groups)
        for request_id in request_ids:
            self.engine.abort(request_id)
            self._deliver(request_id, error)

    def _deliver(self, request_id: str, item: StepOutput | Exception) -> None:
        with self._lock:
            group = self._groups.get(request_id)
        if group is not None:
            try:
                group.loop.call_soon_threadsafe(group.outputs.put_nowait, item)
            except RuntimeError:  # the server's loop is closed: nobody waits for it any more
                pass


def _settle(future: asyncio.Future, result: object = None, error: BaseException | None = None) -> None:
    """Hand `result`, or `error` to raise, to `future` on its loop, unless its caller has gone."""

    def settle() -> None:
        if future.done():  # cancelled
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    try:
        future.get_loop().call_soon_threadsafe(settle)
    except RuntimeError:  # the server's loop is closed: nobody waits for it any more
        pass
