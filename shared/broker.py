"""Builds the faststream NATS broker every service runs on: it holds the connection, answers
the /readyz ping and carries the app's lifecycle. No service consumes through faststream
subscribers (docs/faststream.md says why), so it has no middleware."""

import logging

from faststream.nats import NatsBroker, NatsUserPassword
from faststream.nats.security import NatsSecurity

from batchbus.shared.connection import tls_context
from batchbus.shared.settings import NatsSettings


def make_broker(name: str, settings: NatsSettings) -> NatsBroker:
    """A service's broker, named `batchbus-<name>` on the server."""
    return NatsBroker(
        settings.servers,
        name=f"batchbus-{name}",
        security=broker_security(settings),  # user/password and TLS, when configured
        # faststream logs each message its subscribers take at the broker's level (measured:
        # it halves throughput); none consumes through it, and DEBUG keeps it so if one does.
        log_level=logging.DEBUG,
        # Reconnect for ever: a NATS restart must not stop a service.
        max_reconnect_attempts=-1,
        # A paused or cut-off server keeps the TCP connection open; only unanswered pings
        # reveal it. nats-py's default (120 s x 2) would hold a service there for minutes;
        # this moves it to another cluster node within 10-15 s.
        ping_interval=5,
        max_outstanding_pings=2,
        graceful_timeout=15.0,
    )


def broker_security(settings: NatsSettings) -> NatsSecurity | None:
    """User/password and TLS for faststream's NatsBroker, from the same settings."""
    context = tls_context(settings)
    if settings.user:
        return NatsUserPassword(settings.user, settings.password.get_secret_value(),
                                ssl_context=context)
    return NatsSecurity(ssl_context=context) if context is not None else None
