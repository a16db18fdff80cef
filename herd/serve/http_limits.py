"""How much of the server one client may hold: a request-body size limit (413) and time limits on connections.

Both are written here rather than taken from the libraries because the versions herd supports lack them:
FastAPI's own `max_body_size` arrived only in its late-2026 releases, and uvicorn has no limit on the time a
client takes to send its request headers (its keep-alive timer restarts on every byte), so one client
trickling a header a byte at a time holds a connection, and a clean shutdown, forever. The server therefore
runs on uvicorn's h11 protocol with that deadline added, also where httptools is installed.
"""

from __future__ import annotations

import functools
from typing import Any

import h11
from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from herd.serve.protocol import error_body

MAX_BODY_BYTES = 4 * 2**20
"""Default request-body limit: room for a 128K-token prompt, as text or as token ids (benchmarks/README.md)."""
HEADER_TIMEOUT_S = 10.0
"""Default time a client has to send a request's headers, from its connection or its previous response."""
KEEP_ALIVE_S = 5
"""Idle time after which a kept-alive connection is closed."""
GRACEFUL_SHUTDOWN_S = 10
"""Time requests still running at a shutdown (SIGTERM) get to finish before they are cancelled."""


class BodyLimit:
    """ASGI middleware: a body over `max_bytes` gets 413 (and the connection closed) as soon as it is known,
    from the Content-Length header before any of the body is read, or once the bytes read pass the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.message = (f"the request body is over this server's limit of {max_bytes:,} bytes; send a smaller "
                        "one (the limit is `herd serve --max-body-bytes`)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response = JSONResponse(error_body(self.message), status_code=413, headers={"connection": "close"})
            await response(scope, receive, send)
            return
        read = 0

        async def counted() -> Message:
            nonlocal read
            message = await receive()
            read += len(message.get("body", b""))
            if read > self.max_bytes:  # raised where the app reads the body; its HTTPException handler answers
                raise HTTPException(413, self.message, headers={"connection": "close"})
            return message

        await self.app(scope, counted, send)


class HeaderTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose next request's headers are not in within
    `header_timeout` seconds of the connection or of the previous response."""

    def __init__(self, *args: Any, header_timeout: float = HEADER_TIMEOUT_S, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self._header_timer: Any = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():  # no request head yet
            self.transport.close()


def uvicorn_options(header_timeout: float = HEADER_TIMEOUT_S) -> dict[str, Any]:
    """`uvicorn.Config` settings bounding how long a client may hold a connection."""
    return {
        "http": functools.partial(HeaderTimeoutH11, header_timeout=header_timeout),
        "timeout_keep_alive": KEEP_ALIVE_S,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S,
    }
