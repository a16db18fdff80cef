"""The OpenAI-compatible HTTP server (FastAPI + uvicorn) around `AsyncEngine`, and the web chat page at `/`.

Routes: /v1/chat/completions, /v1/completions, /v1/models (behind the API key when one is set), /health,
/metrics (Prometheus) and / (chat page). Errors are OpenAI-style bodies: 400 bad request, 401 bad key,
404 unknown model, 413 body too large, 429 full, 500 a request that failed, 503 an engine that stopped (then
/health answers 503 too). A client that goes away cancels its generation. Prompts are tokenized on a thread
pool, off the event loop. Chat requests with `tools` get Llama 3.1's tool prompts and their replies read for a
tool call (herd.serve.protocol's ToolMode / ToolReplies).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from herd.errors import HerdError
from herd.model import Transformer
from herd.serve.async_engine import AsyncEngine, EngineBusy, EngineFailed, EngineStopped
from herd.serve.config import EngineConfig
from herd.serve.engine import Engine
from herd.serve.metrics import ServerMetrics
from herd.serve.protocol import (
    ChatCompletionRequest,
    ChoiceLogprobs,
    CompletionRequest,
    SamplingFields,
    ToolMode,
    ToolReplies,
    envelope,
    error_body,
    read_reply,
    tool_calls_body,
    usage,
)
from herd.serve.request import RequestParams, StepOutput
from herd.serve.tool_runner import add_tool_runner, check_exposure
from herd.tokenizer import Message, Tokenizer

try:
    from fastapi import Depends, FastAPI, Header, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
    from prometheus_client import CONTENT_TYPE_LATEST
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException

    from herd.serve.http_limits import HEADER_TIMEOUT_S, MAX_BODY_BYTES, BodyLimit, uvicorn_options
except ImportError as error:  # pragma: no cover - depends on the install
    raise ImportError(f"herd's server needs FastAPI, uvicorn and prometheus-client: pip install 'herd[serve]' ({error})")

if TYPE_CHECKING:
    from types import FrameType

    import torch

    from herd.model.tensor_parallel import TensorParallel
    from herd.serve.guardrails import Guardrails

Outputs = AsyncIterator[tuple[int, StepOutput]]
API_KEY_ENV = "HERD_API_KEY"
IDLE_RANK_TIMEOUT_S = 30 * 86400.0
"""How long a tensor-parallel rank waits for rank 0's next engine step (an idle server sends none)."""


def create_app(
    model: Transformer,
    tok: Tokenizer,
    *,
    model_name: str = "herd",
    api_key: str | None = None,
    engine_config: EngineConfig | None = None,
    max_queue: int = 64,
    max_prompt_tokens: int | None = None,
    guardrails: Guardrails | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    web_tools: Sequence[str] = ("calculator",),
    decode_path: tuple[bool, str] | None = None,
) -> FastAPI:
    """The server app for one model. Requests beyond `engine_config.max_running` running plus `max_queue`
    waiting get 429 (one request holding more than that gets 400); prompts over `max_prompt_tokens` (default:
    the context less one) get 400, bodies over `max_body_bytes` 413. `guardrails` (herd.serve.guardrails)
    check chat requests and replies. `web_tools` run for the web chat (herd.serve.tool_runner: "calculator",
    "python"). `decode_path`: the engine's one-request step as `prepare_linears` decided it."""
    engine = Engine(model, tok, engine_config, path=decode_path)
    metrics = ServerMetrics(engine)
    runner = AsyncEngine(engine, max_pending=engine.config.max_running + max_queue, metrics=metrics)
    limit = min(model.config.max_seq_len, engine.capacity)
    if guardrails is not None:
        guardrails.register(metrics.registry)
        guardrails.attach(runner.call)  # the guard's forwards share the engine's thread (its OpenMP team)
    max_prompt = min(max_prompt_tokens or limit - 1, limit - 1)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        runner.start()
        yield
        runner.stop()

    app = FastAPI(title="herd", lifespan=lifespan)
    app.state.runner = runner
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    _add_error_handlers(app)
    expected = None if api_key is None else f"Bearer {api_key}".encode()

    def authorize(authorization: str | None = Header(None)) -> None:
        if expected is not None and not hmac.compare_digest((authorization or "").encode(), expected):
            raise HTTPException(401, "invalid or missing API key; send 'Authorization: Bearer <key>'")

    async def complete(request: Request, body: SamplingFields, prompts: list[list[int]], chat: bool,
                       logprobs: bool, top_logprobs: int, max_tokens: int | None,
                       dialog: list[Message] | None = None, tools: ToolMode | None = None) -> Response:
        if body.model != model_name:
            raise HTTPException(404, f"model {body.model!r} does not exist; this server serves {model_name!r}")
        grammar = await run_in_threadpool(body.grammar, engine.grammars, tools)  # compiled once, cached by key
        requests: list[tuple[list[int], RequestParams]] = []
        for prompt in prompts:
            if len(prompt) > max_prompt:
                raise HerdError(f"the prompt has {len(prompt)} tokens, over this server's limit of {max_prompt}")
            for _ in range(body.n):
                params = body.params(max_tokens or limit - len(prompt), len(requests), logprobs, top_logprobs,
                                     grammar)
                requests.append((prompt, params))
        call = _Call(tok, model_name, chat, len(requests), sum(len(p) for p in prompts), logprobs, tools)
        outputs = runner.submit(requests)
        if guardrails is not None and dialog is not None:
            outputs = guardrails.screen(dialog, outputs, choices=len(requests), stream=body.stream)
        if body.stream:
            return StreamingResponse(call.stream(outputs, body.include_usage), media_type="text/event-stream")
        return JSONResponse(await call.collect(request, outputs))

    @app.post("/v1/chat/completions", dependencies=[Depends(authorize)])
    async def chat_completions(request: Request, body: ChatCompletionRequest) -> Response:
        max_tokens = body.max_completion_tokens or body.max_tokens
        dialog = body.dialog()
        tools = body.tool_mode()  # "required" / named with custom tools: body.grammar forces the call
        refusal = await guardrails.check_input(dialog) if guardrails is not None else None
        if refusal is not None:
            return JSONResponse(refusal, status_code=400)
        prompt = await run_in_threadpool(body.prompt, tok, tools)
        return await complete(request, body, [prompt], True, body.logprobs, body.top_logprobs or 0, max_tokens,
                              dialog, tools)

    @app.post("/v1/completions", dependencies=[Depends(authorize)])
    async def completions(request: Request, body: CompletionRequest) -> Response:
        prompts = await run_in_threadpool(body.prompts, tok)
        return await complete(request, body, prompts, False, body.logprobs is not None, body.logprobs or 0,
                              body.max_tokens)

    @app.get("/v1/models", dependencies=[Depends(authorize)])
    async def models() -> dict:
        card = {"id": model_name, "object": "model", "created": 0, "owned_by": "herd", "max_model_len": limit}
        return {"object": "list", "data": [card]}

    @app.get("/health")
    async def health() -> JSONResponse:
        if runner.stopped is not None:
            return JSONResponse(error_body(runner.stopped, "server_error"), status_code=503)
        return JSONResponse({"status": "ok", "running": engine.num_running, "waiting": engine.num_waiting,
                             "kv_cache_usage": engine.kv_usage})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    page = resources.files("herd.serve").joinpath("chat.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    async def chat_page() -> str:
        return page.replace("{{MODEL}}", json.dumps(model_name))

    page = page.replace("{{TOOLS}}", json.dumps(add_tool_runner(app, web_tools, [Depends(authorize)],
                                                                keyed=api_key is not None)))
    return app


def resolve_api_key(key: str | None = None, key_file: str | Path | None = None) -> str | None:
    """The server's API key: `key`, else the contents of `key_file` (surrounding whitespace dropped), else
    $HERD_API_KEY; None (no key required) when none is given. A key on the command line shows in `ps`."""
    if key is not None and key_file is not None:
        raise HerdError("give the API key once: --api-key or --api-key-file, not both")
    if key_file is None:
        return key if key is not None else os.environ.get(API_KEY_ENV) or None
    try:
        key = Path(key_file).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise HerdError(f"cannot read the API key file {key_file}: {error}") from None
    if not key:
        raise HerdError(f"the API key file {key_file} is empty; write the key into it")
    return key


def serve(
    model_path: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    *,
    model_name: str | None = None,
    engine_config: EngineConfig | None = None,
    max_queue: int = 64,
    max_prompt_tokens: int | None = None,
    quantize: str | None = None,
    guardrails: Guardrails | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    header_timeout: float = HEADER_TIMEOUT_S,
    tp: int = 1,
    web_tools: Sequence[str] = ("calculator",),
    device: str | torch.device = "cpu",
    wait_policy: str | None = None,
) -> None:
    """Load `model_path` (anything `herd.load` takes) and serve it until interrupted (`herd serve`).

    The memory plan (weights, KV cache, workspace per rank) is printed first and a run that will not fit stops
    there. quantize="int8" or "fp8" serves weight-only quantized linears (per-channel scales); otherwise a CPU
    model serves prepacked linears (`pack_linears`). `guardrails` check chats. A client gets `header_timeout`
    seconds to send each request's headers. `tp` > 1 (under torchrun, one process a rank): each rank holds its
    slice of the weights and runs every engine step; rank 0 alone serves HTTP and schedules. The model serves on
    `device` ("cuda": each rank's own GPU), which the memory plan is checked against. `web_tools` run for
    the web chat; "python" needs an API key unless `host` is a loopback address (HerdError before loading).
    `wait_policy`: the line saying how OpenMP's threads wait (herd.cli.openmp), printed once the engine is ready."""
    check_exposure(web_tools, host, api_key)
    from herd.checkpoint import load
    from herd.model.tensor_parallel import init_tensor_parallel, tp_device

    from herd.serve.compiled_step import prepare_linears
    from herd.serve.memory_plan import check_run_memory

    group = init_tensor_parallel(tp, device, timeout_s=IDLE_RANK_TIMEOUT_S)
    lead = group is None or group.rank == 0
    listener, cause = None, None
    if lead:
        try:
            listener = listen(host, port)
        except HerdError as error:
            cause = str(error)
    if group is not None:  # every rank stops before loading when rank 0 cannot serve
        cause = group.broadcast_object(cause)
    if cause is not None:
        _stopped(group, cause)  # rank 0 raises
        return
    device = tp_device(group, device)
    limits = engine_config or EngineConfig()
    check_run_memory(str(model_path), tp=tp, device=device, quantize=quantize, context=limits.kv_tokens,
                     step_tokens=limits.max_step_tokens, show=lead, compile=limits.compile)
    model, tok = load(model_path, device=device, tp=group)
    path = prepare_linears(model, limits.compile, quantize)
    started = time.perf_counter()
    app = create_app(
        model, tok, model_name=model_name or Path(str(model_path)).name, api_key=api_key,
        engine_config=engine_config, max_queue=max_queue, max_prompt_tokens=max_prompt_tokens, guardrails=guardrails,
        max_body_bytes=max_body_bytes, web_tools=web_tools, decode_path=path,
    )
    if not lead:
        _follow(app.state.runner.engine, group)
        return
    print(f"herd serve: {app.state.runner.engine.decode_path} (engine ready in {time.perf_counter() - started:.1f}"
          " s; --compile on|off|auto)", file=sys.stderr, flush=True)
    if wait_policy is not None:
        print(wait_policy, file=sys.stderr, flush=True)
    cause = _serve_http(app, listener, host, port, header_timeout, group)
    if cause is not None:
        _stopped(group, cause)
    if group is not None:
        group.close()


def _serve_http(app: FastAPI, listener: socket.socket, host: str, port: int, header_timeout: float,
                group: TensorParallel | None) -> str | None:
    """Rank 0: serve on `listener` until interrupted; None, or why the server stopped. The other ranks are told
    either way (the engine's stop message, then the cause), except after a failed engine step, where they may be
    mid-step: rank 0 exits and their collective fails."""
    import uvicorn

    runner = app.state.runner
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, **uvicorn_options(header_timeout)))
    failures: list[BaseException] = []
    if group is not None:  # the engine thread ended by an error stops the server: no rank can step on

        def engine_ended(error: BaseException | None) -> None:
            if error is not None:
                failures.append(error)
                server.should_exit = True

        runner.on_stop = engine_ended
    causes: list[str] = []

    def http() -> None:
        try:
            server.run(sockets=[listener])
        except (Exception, SystemExit) as error:  # uvicorn exits when its start-up fails
            causes.append(f"the server failed ({type(error).__name__}: {error})")

    # The engine steps on this thread, which loaded the model (herd.serve.async_engine says why). uvicorn, on its own
    # thread, leaves the signals to this one, which handles them as uvicorn does on the main thread: the first
    # SIGINT or SIGTERM shuts the server down gracefully, and each is raised again once the handlers are restored.
    captured: list[int] = []

    def on_signal(sig: int, frame: FrameType | None) -> None:
        captured.append(sig)
        server.handle_exit(sig, frame)

    exits = (signal.SIGINT, signal.SIGTERM) if threading.current_thread() is threading.main_thread() else ()
    handlers = {sig: signal.signal(sig, on_signal) for sig in exits}
    try:
        runner.run(http)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    for sig in reversed(captured):
        signal.raise_signal(sig)
    cause = causes[0] if causes else None
    if failures:
        return f"the engine failed ({type(failures[0]).__name__}: {failures[0]})"
    runner.engine.close()  # the stop message: the other ranks leave `follow`
    if group is not None:
        group.broadcast_object(cause)
    return cause


def _follow(engine: Engine, group: TensorParallel) -> None:
    """A rank other than 0: run rank 0's engine steps until its stop message, then leave (at once after a failure
    rank 0 reports). A failed collective (rank 0 gone mid-step, or this rank failing) ends it in one line, status 1."""
    try:
        engine.follow()
        cause = group.broadcast_object()  # rank 0's outcome: None, or why it stopped
    except RuntimeError as error:  # gloo: "Connection closed by peer"; nccl: DistBackendError
        group.close(wait=False)
        raise SystemExit(f"herd: rank {group.rank} stopped: {str(error).splitlines()[0]}") from None
    if cause is not None:
        _stopped(group, cause)
        return
    group.close()


def listen(host: str, port: int) -> socket.socket:
    """The server's listening socket, bound before any weight loads; HerdError when `host`:`port` is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as error:
        why = os.strerror(error.errno) if error.errno else str(error)
        raise HerdError(f"cannot listen on {host}:{port} ({why}); pick another --port or --host") from None


def _stopped(group: TensorParallel | None, cause: str) -> None:
    """Rank 0 (or a single process) raises `cause` as one line naming the rank; another rank returns quietly,
    leaving rank 0's failure as the job's (torchrun stops a job at its first failed rank, which would cut rank 0
    off before its line), without waiting on a barrier rank 0 will not reach."""
    if group is None:
        raise HerdError(cause)
    group.close(wait=False)
    if group.rank == 0:
        raise HerdError(f"rank 0 stopped serving: {cause}; the other ranks stopped too")


class _Call:
    """One API call's choices: collected into a response body, or streamed as server-sent events. With `tools`,
    each chat reply is read for a tool call."""

    def __init__(self, tok: Tokenizer, model: str, chat: bool, choices: int, prompt_tokens: int,
                 logprobs: bool, tools: ToolMode | None = None) -> None:
        self.tok, self.model, self.chat, self.logprobs, self.tools = tok, model, chat, logprobs, tools
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.kind = "chat.completion" if chat else "text_completion"
        self.prompt_tokens = prompt_tokens
        self.texts = [""] * choices
        self.counts = [0] * choices

    def _logprobs(self) -> ChoiceLogprobs | None:
        return ChoiceLogprobs(self.tok) if self.logprobs else None

    def _choice(self, index: int, text: str, logprobs: ChoiceLogprobs | None, reason: str | None, *,
                delta: bool, calls: list[dict] | None = None) -> dict:
        shaped = None if logprobs is None else logprobs.chat() if self.chat else logprobs.completion()
        choice: dict = {"index": index, "logprobs": shaped, "finish_reason": reason}
        if not self.chat:
            choice["text"] = text
        elif delta:
            choice["delta"] = {"content": text} if text else {}
            if calls:
                choice["delta"]["tool_calls"] = calls
        elif calls:
            choice["message"] = {"role": "assistant", "content": text or None, "tool_calls": calls}
        else:
            choice["message"] = {"role": "assistant", "content": text}
        return choice

    def _usage(self) -> dict:
        return usage(self.prompt_tokens, sum(self.counts))

    def _take(self, index: int, out: StepOutput, logprobs: ChoiceLogprobs | None) -> None:
        if logprobs is not None:
            logprobs.add(out, len(self.texts[index]))
        self.texts[index] += out.text
        self.counts[index] += out.token_id is not None

    async def collect(self, request: Request, outputs: Outputs) -> dict:
        """The whole response; cancels the generation if the client disconnects meanwhile."""
        logprobs = [self._logprobs() for _ in self.texts]
        reasons: list[str | None] = [None] * len(self.texts)

        async def consume() -> None:
            async for index, out in outputs:
                self._take(index, out, logprobs[index])
                reasons[index] = out.finish_reason or reasons[index]

        task = asyncio.ensure_future(consume())
        while not task.done():
            await asyncio.wait({task}, timeout=0.25)
            if not task.done() and await request.is_disconnected():
                task.cancel()
        if task.cancelled():  # the client is gone and reads no answer; its generation is aborted
            return error_body("the client disconnected")
        await task
        choices = []
        for i, text in enumerate(self.texts):
            calls = []
            if self.tools is not None:
                text, found = read_reply(text, self.tools)
                calls = tool_calls_body(found)
            reason = "tool_calls" if calls else reasons[i]
            choices.append(self._choice(i, text, logprobs[i], reason, delta=False, calls=calls))
        return envelope(self.kind, self.id, self.model, choices, self._usage())

    async def stream(self, outputs: Outputs, include_usage: bool) -> AsyncIterator[str]:
        """Server-sent events: one chunk per new piece of text (the last one with its finish reason)."""
        kind = f"{self.kind}.chunk" if self.chat else self.kind
        if self.chat:
            for index in range(len(self.texts)):
                first = {"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                         "finish_reason": None}
                yield _event(envelope(kind, self.id, self.model, [first]))
        replies = [ToolReplies(self.tools) for _ in self.texts] if self.tools is not None else None
        try:
            async for index, out in outputs:
                logprobs = self._logprobs()
                self._take(index, out, logprobs)
                text, reason = out.text, out.finish_reason
                if replies is not None:
                    text = replies[index].push(text)
                    if reason is not None:
                        tail, calls = replies[index].finish()
                        if tail:
                            choice = self._choice(index, tail, None, None, delta=True)
                            yield _event(envelope(kind, self.id, self.model, [choice]))
                        for call in calls:  # one tool-call delta a chunk, as OpenAI streams them
                            choice = self._choice(index, "", None, None, delta=True, calls=[call])
                            yield _event(envelope(kind, self.id, self.model, [choice]))
                        reason = "tool_calls" if calls else reason
                if text or reason or out.logprob is not None:
                    choice = self._choice(index, text, logprobs, reason, delta=True)
                    yield _event(envelope(kind, self.id, self.model, [choice]))
        except (EngineFailed, HerdError) as error:  # the answer has started: the error goes in the stream
            yield _event(error_body(str(error), "server_error" if isinstance(error, EngineFailed) else
                                    "invalid_request_error"))
            return
        if include_usage:
            yield _event(envelope(kind, self.id, self.model, [], self._usage()))
        yield "data: [DONE]\n\n"


def _event(body: dict) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as an OpenAI-style body: {"error": {"message", "type", "param", "code"}}."""

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(part) for part in first["loc"] if part != "body")
        message = f"{where}: {first['msg']}" if where else first["msg"]
        return JSONResponse(error_body(message, param=where or None), status_code=400)

    @app.exception_handler(EngineBusy)
    async def busy(_request: Request, error: EngineBusy) -> JSONResponse:
        return JSONResponse(error_body(str(error), "rate_limit_error"), status_code=429)

    @app.exception_handler(HerdError)
    async def bad_request(_request: Request, error: HerdError) -> JSONResponse:
        return JSONResponse(error_body(str(error)), status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, error: HTTPException) -> JSONResponse:
        kind = {401: "authentication_error", 404: "not_found_error"}.get(error.status_code, "invalid_request_error")
        return JSONResponse(error_body(str(error.detail), kind), status_code=error.status_code, headers=error.headers)

    @app.exception_handler(EngineFailed)
    async def failed(_request: Request, error: EngineFailed) -> JSONResponse:
        status = 503 if isinstance(error, EngineStopped) else 500
        return JSONResponse(error_body(str(error), "server_error"), status_code=status)

    @app.exception_handler(Exception)
    async def crashed(_request: Request, error: Exception) -> JSONResponse:  # logged by uvicorn as well
        message = f"the server failed on this request ({type(error).__name__}); its log has the details"
        return JSONResponse(error_body(message, "server_error"), status_code=500)
