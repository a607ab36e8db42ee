"""The node's web site: the HTTP API (api/http.py) with the console (console.py) and the
API's readable docs mounted on it, served by uvicorn on the gateway's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from cocharge.api.http import build_app
from cocharge.api.service import Api
from cocharge.web.console import mount_console, render_api_docs

log = logging.getLogger(__name__)


def build_site(api: Api) -> FastAPI:
    """The API, its docs page and the console for one gateway node."""
    app = build_app(api)

    @app.get("/api/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        return HTMLResponse(render_api_docs(request, app.openapi()))

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/console/", status_code=303)

    mount_console(app, api, app.state.guard)
    return app


class ApiServer:
    """The API on its own port, run by uvicorn on the gateway's event loop."""

    def __init__(self, api: Api, host: str, port: int) -> None:
        self.api = api
        self.host = host
        self.port = port
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(1024)
        sock.setblocking(False)
        self._socket = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(build_site(self.api), lifespan="off", ws="none",
                                log_config=None, access_log=False, server_header=False,
                                timeout_keep_alive=30, limit_concurrency=1000)
        self._server = _Embedded(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():  # failed to start: its exception says why
                await self._task
                raise OSError(f"the HTTP API did not start on {self.host}:{self.port}")
            await asyncio.sleep(0.01)
        log.info("HTTP API and console on %s", self.url)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class _Embedded(uvicorn.Server):
    """uvicorn's server on the gateway's loop: the gateway, not uvicorn, handles SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
