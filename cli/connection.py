"""Connecting the CLI to NATS: fail within seconds with a clear message when the server does
not answer, then ride out short outages while following results."""

import contextlib
import logging
from collections.abc import AsyncIterator

import nats
import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from batchbus.cli.errors import CliError
from batchbus.shared import subjects
from batchbus.shared.connection import connect_options
from batchbus.shared.settings import NatsSettings

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
CONNECT_TIMEOUT = 3.0

log = logging.getLogger("batchbus.cli")


async def _quiet(exc: Exception) -> None:
    # nats-py logs every failed (re)connect with a traceback by default; the CLI reports
    # an unreachable server once, itself.
    log.debug("nats: %s", exc)


def _secured() -> dict[str, object]:
    """NATS_USER / NATS_PASSWORD and NATS_TLS_* from the environment, as the services read them."""
    return connect_options(NatsSettings())


def servers(url: str) -> list[str]:
    return [s.strip() for s in url.split(",") if s.strip()]


async def probe(url: str) -> Exception | None:
    """None when NATS at `url` answers, else why not; within seconds.

    nats-py retries a first connect like a reconnect (2 minutes by default), and
    `max_reconnect_attempts=0` means "retry forever" to it, so the probe allows exactly one
    retry, soon after the first attempt.
    """
    try:
        nc = await nats.connect(servers(url), allow_reconnect=False, max_reconnect_attempts=1,
                                reconnect_time_wait=0.1, connect_timeout=CONNECT_TIMEOUT,
                                error_cb=_quiet, **_secured())
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        return exc
    await nc.close()
    return None


@contextlib.asynccontextmanager
async def connected(url: str) -> AsyncIterator[Client]:
    """A NATS connection that reconnects once it is up; closed on exit."""
    if (problem := await probe(url)) is not None:
        raise CliError(f"cannot reach NATS at {url} ({problem or type(problem).__name__}); "
                       "start batchbus locally with `batchbus up`, or pass --nats / set "
                       "NATS_URL")
    nc = await nats.connect(servers(url), name="batchbus-cli", error_cb=_quiet,
                            connect_timeout=CONNECT_TIMEOUT, **_secured())
    try:
        yield nc
    finally:
        await nc.close()  # every publish already has its PubAck; nothing is left to drain


async def require_streams(js: JetStreamContext, *streams: str) -> None:
    """Fails clearly when batchbus's services never ran against this server (they create
    the streams at start-up)."""
    for stream in streams:
        try:
            await js.stream_info(stream)
        except NotFoundError as exc:
            raise CliError(f"stream {stream} not found: the batchbus services have not run "
                           "against this NATS server yet (try `batchbus up`)") from exc


async def require_tasks_and_results(js: JetStreamContext) -> None:
    await require_streams(js, subjects.STREAM_TASKS, subjects.STREAM_RESULTS)
