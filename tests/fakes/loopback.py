"""The plumbing every fake HTTP server shares: an aiohttp app on 127.0.0.1 (an ephemeral port unless one is
given), served from its own thread and event loop so a test's own code (and the real clients under test)
run unchanged beside it. Subclasses add their routes in ``build_app`` and may set ``url_path``."""
from __future__ import annotations

import asyncio
import threading

from aiohttp import web


class LoopbackServer:
    label = "fake server"
    url_path = ""  # appended to http://127.0.0.1:PORT to make ``url`` (e.g. "/v1")
    backlog = 128

    def __init__(self, port: int = 0):
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    def build_app(self) -> web.Application:
        raise NotImplementedError

    def new_loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.new_event_loop()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"{self.label} did not start")

    def _serve(self, ready: threading.Event) -> None:
        self._loop = self.new_loop()
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start_site())
        ready.set()
        self._loop.run_forever()

    async def _start_site(self) -> None:
        self._runner = web.AppRunner(self.build_app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self._port, backlog=self.backlog).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}{self.url_path}"

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None
