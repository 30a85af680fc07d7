"""Wraps a service's broker in an ASGI app with /metrics, /healthz and /readyz."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from faststream.asgi import AsgiFastStream, AsgiResponse, get, make_ping_asgi
from faststream.nats import NatsBroker
from prometheus_client import CollectorRegistry, make_asgi_app

from shared.settings import HttpSettings

log = logging.getLogger("batchbus")


def make_app(
    broker: NatsBroker,
    registry: CollectorRegistry,
    *,
    on_startup: Sequence[Callable[[], Awaitable[Any]]] = (),
    after_startup: Sequence[Callable[[], Awaitable[Any]]] = (),
    on_shutdown: Sequence[Callable[[], Awaitable[Any]]] = (),
) -> AsgiFastStream:
    """`on_startup` hooks run once NATS is connected but before any subscriber starts,
    so they can declare the streams and buckets the subscribers bind to."""

    async def connect() -> None:
        await broker.connect()
        for hook in on_startup:
            await hook()

    @get
    async def healthz(scope: Any) -> AsgiResponse:
        return AsgiResponse(b"ok", 200)

    return AsgiFastStream(
        broker,
        asgi_routes=[
            ("/metrics", make_asgi_app(registry)),
            ("/healthz", healthz),
            ("/readyz", make_ping_asgi(broker, timeout=2.0)),
        ],
        on_startup=[connect],
        after_startup=after_startup,
        on_shutdown=on_shutdown,
    )


def run(app: AsgiFastStream, http: HttpSettings, default_port: int) -> None:
    """Entry point of `python -m services.<name>`; METRICS_PORT overrides `default_port`."""
    port = default_port if http.port is None else http.port
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # one line per API call otherwise
    asyncio.run(app.run(log_level=logging.WARNING,
                        run_extra_options={"host": http.host, "port": port}))


class Supervised:
    """Runs a service's main loop as a task; an unexpected error is logged and the loop restarts."""

    def __init__(self, name: str, loop: Callable[[], Awaitable[None]],
                 restart_delay: float = 1.0) -> None:
        self.name = name
        self._loop = loop
        self._restart_delay = restart_delay
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self._loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s loop failed; restarting in %.1fs", self.name, self._restart_delay)
                await asyncio.sleep(self._restart_delay)
