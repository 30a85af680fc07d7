"""Wraps a service's broker in an ASGI app with /metrics, /healthz and /readyz."""

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import nats.errors
from faststream.asgi import AsgiFastStream, AsgiResponse, HttpHandler, get
from faststream.nats import NatsBroker
from nats.js import JetStreamContext
from nats.js.errors import ServiceUnavailableError
from prometheus_client import make_asgi_app

from batchbus.shared import gc_tuning, streams
from batchbus.shared.connection import server_problem
from batchbus.shared.metrics import ServiceMetrics
from batchbus.shared.settings import HttpSettings, NatsSettings

log = logging.getLogger("batchbus")

# What JetStream answers while it cannot serve a request yet (TimeoutError covers nats-py's).
JETSTREAM_UNAVAILABLE = (TimeoutError, nats.errors.NoRespondersError, ServiceUnavailableError)

T = TypeVar("T")
Loop = Callable[[], Awaitable[None]]
Setup = Callable[[JetStreamContext], Awaitable[dict[str, Loop]]]
Check = Callable[[], Awaitable[bool]]


class Readiness:
    """What /readyz reports: started, connected to NATS, and every extra check passing."""

    def __init__(self, timeout: float = 2.0) -> None:
        self.timeout = timeout
        self.started = False
        self._checks: dict[str, Check] = {}

    def add(self, name: str, check: Check) -> None:
        """Adds a check (True: ready); one that raises or outlasts `timeout` counts as failed."""
        self._checks[name] = check

    async def failures(self, broker: NatsBroker) -> list[str]:
        """Names of the failing checks; empty when ready."""
        if not self.started:
            return ["startup"]
        # The broker ping is what faststream's make_ping_asgi checks.
        checks: dict[str, Check] = {"nats": lambda: broker.ping(self.timeout), **self._checks}
        passed = await asyncio.gather(*(self._passes(n, c) for n, c in checks.items()))
        return [name for name, ok in zip(checks, passed, strict=True) if not ok]

    async def _passes(self, name: str, check: Check) -> bool:
        try:
            return bool(await asyncio.wait_for(check(), self.timeout))
        except Exception as exc:
            log.warning("readiness check %s failed: %r", name, exc)
            return False

    def endpoint(self, broker: NatsBroker) -> HttpHandler:
        @get
        async def readyz(scope: Any) -> AsgiResponse:
            failed = await self.failures(broker)
            if not failed:
                return AsgiResponse(b"", 204)
            return AsgiResponse(("not ready: " + ", ".join(failed)).encode(), 503)

        return readyz


class ServiceApp(AsgiFastStream):
    """A service's app, with the NATS settings its start-up connects with."""

    def __init__(self, broker: NatsBroker, nats: NatsSettings, **options: Any) -> None:
        super().__init__(broker, **options)
        self.nats = nats
        self.nats_broker = broker


def make_app(broker: NatsBroker, metrics: ServiceMetrics, nats: NatsSettings,
             setup: Setup, *, readiness: Readiness | None = None) -> ServiceApp:
    """An app whose `setup` runs once NATS is connected and the streams exist, before any
    subscriber starts; the loops it returns run supervised until shutdown.

    /readyz answers 204 once `setup` has run while the broker is connected and every check
    added to `readiness` (for example by `setup`, once it has an API client) passes.
    """
    supervised: list[Supervised] = []
    readiness = Readiness() if readiness is None else readiness

    async def prepare(js: JetStreamContext) -> dict[str, Loop]:
        await streams.ensure_streams(js, nats)
        return await setup(js)

    async def start() -> None:
        await _connect(broker, nats)  # done already when started by `run`
        js = broker.connection.jetstream()
        loops = await _unless_signalled(until_available(lambda: prepare(js)),
                                        "stopped by a signal before start-up finished")
        for name, loop in loops.items():
            supervised.append(Supervised(name, loop, metrics.loop_restarts.labels(name).inc))
            await supervised[-1].start()

    async def started() -> None:
        readiness.started = True  # the subscribers are running too by now

    async def stop() -> None:
        readiness.started = False  # taken out of rotation while it drains
        for loop in supervised:
            await loop.stop()

    @get
    async def healthz(scope: Any) -> AsgiResponse:
        return AsgiResponse(b"ok", 200)

    return ServiceApp(
        broker, nats,
        asgi_routes=[
            ("/metrics", make_asgi_app(metrics.registry)),
            ("/healthz", healthz),
            ("/readyz", readiness.endpoint(broker)),
        ],
        on_startup=[start],
        after_startup=[started],
        on_shutdown=[stop],
        # Its lifecycle lines through our logging: faststream's own logger colours them,
        # which leaves escape codes in log files.
        logger=log,
    )


async def _connect(broker: NatsBroker, nats: NatsSettings) -> None:
    """Connects within NATS_CONNECT_TIMEOUT_SECONDS to a server batchbus can run on, or
    exits saying why (the broker itself would retry for ever, silently)."""
    where = ", ".join(nats.servers)
    try:
        await asyncio.wait_for(broker.connect(), nats.connect_timeout_seconds)
    except TimeoutError:
        _exit(f"cannot reach NATS at {where} within {nats.connect_timeout_seconds:g}s "
              "(NATS_CONNECT_TIMEOUT_SECONDS); is it running, and is NATS_URL right?", 1)
    if (problem := server_problem(broker.connection)) is not None:
        _exit(problem, 1)


async def _unless_signalled(step: Awaitable[T], stopped: str) -> T:
    """`step`'s result, or, on SIGTERM or SIGINT meanwhile, the end of the service with the
    line `stopped`. The server (uvicorn) acts on signals only once start-up is done, so a
    service waiting for NATS or JetStream would ignore them; and nats-py's connect swallows a
    cancel, so the signal ends the process rather than cancelling the step."""
    loop = asyncio.get_running_loop()
    signalled = asyncio.Event()
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in saved:
        loop.add_signal_handler(sig, signalled.set)
    work = asyncio.ensure_future(step)
    waiting = asyncio.ensure_future(signalled.wait())
    try:
        await asyncio.wait({work, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if signalled.is_set():
            _exit(stopped, 0)
        return work.result()
    finally:
        waiting.cancel()
        for sig, handler in saved.items():
            loop.remove_signal_handler(sig)
            signal.signal(sig, handler)  # the server's own handlers back


def _exit(reason: str, code: int) -> NoReturn:
    """Ends a service that never started: one line, no traceback. Nothing is connected or
    held yet, and raising from a start-up hook would print the ASGI server's traceback."""
    (log.error if code else log.info)("%s", reason)
    logging.shutdown()
    os._exit(code)


async def until_available(step: Callable[[], Awaitable[T]], first_delay: float = 0.5,
                          max_delay: float = 5.0) -> T:
    """Runs `step` until JetStream answers it. A cluster electing a leader or short of a
    quorum answers late or with 503 for a while; a service starting then waits, not exits."""
    delay = first_delay
    while True:
        try:
            return await step()
        except JETSTREAM_UNAVAILABLE as exc:
            log.warning("JetStream unavailable at start-up (%r); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(2 * delay, max_delay)


def run(app: AsgiFastStream, http: HttpSettings, default_port: int) -> None:
    """Entry point of `python -m services.<name>`; METRICS_PORT overrides `default_port`."""
    assert isinstance(app, ServiceApp), "a service's app comes from make_app"
    port = default_port if http.port is None else http.port
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # one line per API call otherwise
    gc_tuning.tune()
    asyncio.run(_serve(app, http.host, port))


async def _serve(app: ServiceApp, host: str, port: int) -> None:
    """Connects to NATS first, while a signal still stops it at once, then serves."""
    async def connecting() -> None:  # runs once the signal handlers are in place
        log.info("connecting to NATS at %s", ", ".join(app.nats.servers))
        await _connect(app.nats_broker, app.nats)

    await _unless_signalled(connecting(), "stopped by a signal before NATS answered")
    await app.run(log_level=logging.WARNING, run_extra_options={"host": host, "port": port})


class Supervised:
    """Runs a service's main loop as a task; an unexpected error is logged and the loop restarts."""

    def __init__(self, name: str, loop: Callable[[], Awaitable[None]],
                 on_restart: Callable[[], None], restart_delay: float = 1.0) -> None:
        self.name = name
        self._loop = loop
        self._on_restart = on_restart
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
                self._on_restart()
                await asyncio.sleep(self._restart_delay)
