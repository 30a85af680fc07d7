"""Connecting the CLI to NATS: which server (--nats / NATS_URL, else the running `batchbus
up`, else the default), a preflight of that server, and one line naming it when anything
goes wrong; then ride out short outages while following results."""

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from batchbus.cli import state
from batchbus.cli.errors import CliError
from batchbus.shared import subjects
from batchbus.shared.connection import connect_options, server_problem
from batchbus.shared.settings import NatsSettings

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
CONNECT_TIMEOUT = 3.0
# No square brackets: typer reads help as rich markup.
NATS_HELP = ("NATS server(s), comma separated (default: the one a running `batchbus up` "
             f"recorded, see `batchbus env`; else {DEFAULT_NATS_URL})")

log = logging.getLogger("batchbus.cli")

Origin = Literal["--nats", "NATS_URL", "up", "default"]


@dataclass(frozen=True)
class Target:
    """The NATS server a command uses, and why that one: every error names both."""

    url: str
    origin: Origin
    up: state.UpRecord | None = None  # the running `batchbus up`, whether or not it was used

    @property
    def named(self) -> str:
        return f"NATS at {self.url}"

    def why(self) -> str:
        """Why this server, as a clause: `NATS_URL names it`."""
        if self.origin == "up":
            assert self.up is not None
            return f"{self.up.describe()} recorded it in {self.up.path}"
        if self.origin == "default":
            return (f"it is the default: NATS_URL is not set and no `batchbus up` is running "
                    f"(none recorded in {state.state_dir()})")
        return f"{self.origin} names it"

    def other_up(self) -> str:
        """A hint when a `batchbus up` runs elsewhere than the server given: '' if none."""
        if self.up is None or self.origin == "up" or self.up.nats_url == self.url:
            return ""
        return (f"; {self.up.describe()} runs NATS at {self.up.nats_url}: unset NATS_URL "
                "or pass --nats " + self.up.nats_url)


def resolve(nats_url: str | None) -> Target:
    """--nats or NATS_URL when given (typer fills one from the other), else the NATS server
    of a running `batchbus up`, else the default."""
    running = state.running()
    if nats_url:
        origin: Origin = "NATS_URL" if os.environ.get("NATS_URL") == nats_url else "--nats"
        return Target(nats_url, origin, running)
    if running is not None:
        return Target(running.nats_url, "up", running)
    return Target(DEFAULT_NATS_URL, "default")


async def _quiet(exc: Exception) -> None:
    # nats-py logs every failed (re)connect with a traceback by default; the CLI reports
    # an unreachable server once, itself.
    log.debug("nats: %s", exc)


def _secured() -> dict[str, object]:
    """NATS_USER / NATS_PASSWORD and NATS_TLS_* from the environment, as the services read them."""
    return connect_options(NatsSettings())


def servers(url: str) -> list[str]:
    return [s.strip() for s in url.split(",") if s.strip()]


@dataclass(frozen=True)
class Answer:
    """What a probe of a server found: it did not answer (`error`), it answered but cannot
    run batchbus (`problem`, one line naming it), or neither: it is fit."""

    error: Exception | None = None
    problem: str | None = None

    @property
    def fit(self) -> bool:
        return self.error is None and self.problem is None


async def probe(url: str) -> Answer:
    """Whether NATS at `url` answers and can run batchbus (2.12+ with JetStream); within
    seconds.

    nats-py retries a first connect like a reconnect (2 minutes by default), and
    `max_reconnect_attempts=0` means "retry forever" to it, so the probe allows exactly one
    retry, soon after the first attempt.
    """
    try:
        nc = await nats.connect(servers(url), allow_reconnect=False, max_reconnect_attempts=1,
                                reconnect_time_wait=0.1, connect_timeout=CONNECT_TIMEOUT,
                                error_cb=_quiet, **_secured())
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        return Answer(error=exc)
    try:
        return Answer(problem=server_problem(nc))
    finally:
        await nc.close()


def unreachable(target: Target, error: Exception) -> str:
    """One line: which server did not answer, why that one, and what to do."""
    reason = str(error) or type(error).__name__
    line = f"cannot reach {target.named} ({reason})"
    if target.origin == "default":
        return (f"{line}; NATS_URL is not set and no `batchbus up` is running (none recorded "
                f"in {state.state_dir()}): start one with `batchbus up`, or set NATS_URL "
                "(or --nats) to the server batchbus runs on")
    if target.origin == "up":
        assert target.up is not None
        hint = ("try again once it prints `batchbus is up`" if target.up.state == "starting"
                else "see its terminal (it may be stopping), or set NATS_URL")
        return f"{line}, the server {target.up.describe()} recorded in {target.up.path}; {hint}"
    return f"{line}, which {target.why()}; is that server running?{target.other_up()}"


def unfit(target: Target, problem: str) -> str:
    return f"{problem} — {target.why()}{target.other_up()}"


def no_state(target: Target, what: str) -> str:
    """`what` (a stream, a bucket) is missing: batchbus's services never ran against it."""
    line = f"{what} not found on {target.named}: the batchbus services have not run against it"
    if target.origin == "default":
        return (f"{line}; {target.why()}: start batchbus with `batchbus up`, or set NATS_URL "
                "(or --nats) to the server batchbus runs on")
    if target.origin == "up":
        assert target.up is not None
        return f"{line} yet; {target.up.describe()} creates them as its services start"
    return (f"{line}; {target.why()}: point it at the server batchbus runs on, or start the "
            f"services against this one{target.other_up()}")


class MissingState(Exception):
    """A batchbus stream or bucket is absent; `connected` names the server and the fix."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def describe_failure(target: Target, exc: Exception) -> str | None:
    """One line for a NATS failure inside a command, naming the server; None when `exc` is
    not a NATS failure."""
    named = target.named
    if isinstance(exc, MissingState):
        return no_state(target, exc.what)
    if isinstance(exc, nats.errors.NoRespondersError | nats.js.errors.ServiceUnavailableError):
        # A 503 or no responders on a JetStream API subject: JetStream is off, or (in a
        # cluster) has no meta leader yet.
        return (f"JetStream on {named} did not answer (503): it is disabled, or a cluster "
                f"has not elected its JetStream leader yet — {target.why()}")
    if isinstance(exc, nats.js.errors.NoStreamResponseError):
        return (f"no stream on {named} took the message: the batchbus services have not run "
                f"against it — {target.why()}")
    if isinstance(exc, nats.errors.MaxPayloadError):
        return f"a message is larger than {named} accepts (its max_payload)"
    if isinstance(exc, nats.js.errors.APIError):
        detail = exc.description or (f"code {exc.code}" if exc.code else type(exc).__name__)
        return f"JetStream on {named} refused the request: {detail}"
    if isinstance(exc, nats.errors.TimeoutError):
        return f"{named} did not answer in time (a JetStream request timed out)"
    if isinstance(exc, nats.errors.ConnectionClosedError | nats.errors.StaleConnectionError
                  | nats.errors.UnexpectedEOF | nats.errors.OutboundBufferLimitError):
        return f"lost the connection to {named} ({type(exc).__name__})"
    if isinstance(exc, nats.errors.Error):
        return f"{named}: {str(exc) or type(exc).__name__}"
    return None


@contextlib.asynccontextmanager
async def connected(target: Target) -> AsyncIterator[Client]:
    """A NATS connection to a fit server that reconnects once it is up; closed on exit.
    Every NATS failure, here or in the body, becomes one CliError naming the server."""
    answer = await probe(target.url)
    if answer.error is not None:
        raise CliError(unreachable(target, answer.error))
    if answer.problem is not None:
        raise CliError(unfit(target, answer.problem))
    nc = await nats.connect(servers(target.url), name="batchbus-cli", error_cb=_quiet,
                            connect_timeout=CONNECT_TIMEOUT, **_secured())
    try:
        yield nc
    except (MissingState, nats.errors.Error) as exc:
        message = describe_failure(target, exc)
        if message is None:
            raise
        raise CliError(message) from exc
    finally:
        await nc.close()  # every publish already has its PubAck; nothing is left to drain


async def require_streams(js: JetStreamContext, *streams: str) -> None:
    """Fails clearly when batchbus's services never ran against this server (they create
    the streams at start-up)."""
    for stream in streams:
        try:
            await js.stream_info(stream)
        except NotFoundError as exc:
            raise MissingState(f"stream {stream}") from exc


async def require_tasks_and_results(js: JetStreamContext) -> None:
    await require_streams(js, subjects.STREAM_TASKS, subjects.STREAM_RESULTS)
