"""Wraps a service's broker in an ASGI app with /metrics, /healthz and /readyz."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from faststream.asgi import AsgiFastStream, AsgiResponse, get, make_ping_asgi
from faststream.nats import NatsBroker
from nats.js import JetStreamContext
from prometheus_client import CollectorRegistry, make_asgi_app

from shared import streams
from shared.settings import HttpSettings, NatsSettings

log = logging.getLogger("batchbus")


Loop = Callable[[], Awaitable[None]]
Setup = Callable[[JetStreamContext], Awaitable[dict[str, Loop]]]


def make_app(broker: NatsBroker, registry: CollectorRegistry, nats: NatsSettings,
             setup: Setup) -> AsgiFastStream:
    """An app whose `setup` runs once NATS is connected and the streams exist, before any
    subscriber starts; the loops it returns run supervised until shutdown."""
    supervised: list[Supervised] = []

    async def start() -> None:
        await broker.connect()
        js = broker.connection.jetstream()
        await streams.ensure_streams(js, nats)
        for name, loop in (await setup(js)).items():
            supervised.append(Supervised(name, loop))
            await supervised[-1].start()

    async def stop() -> None:
        for loop in supervised:
            await loop.stop()

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
        on_startup=[start],
        on_shutdown=[stop],
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
