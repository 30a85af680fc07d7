"""Builds the NATS broker every service uses, with Prometheus middleware and quiet logs."""

import logging

from faststream.nats import NatsBroker, NatsUserPassword
from faststream.nats.prometheus import NatsPrometheusMiddleware
from faststream.nats.security import NatsSecurity
from prometheus_client import CollectorRegistry

from batchbus.shared.connection import tls_context
from batchbus.shared.metrics import Metrics
from batchbus.shared.settings import NatsSettings


def make_broker(name: str, settings: NatsSettings) -> tuple[NatsBroker, Metrics]:
    """A service's broker and its metrics, which share one Prometheus registry."""
    metrics = Metrics(CollectorRegistry())
    broker = NatsBroker(
        settings.servers,
        name=f"batchbus-{name}",
        security=broker_security(settings),  # user/password and TLS, when configured
        middlewares=[NatsPrometheusMiddleware(registry=metrics.registry, app_name=name)],
        # faststream logs every message at the broker's level; DEBUG keeps that out of
        # INFO logs, which otherwise halve throughput.
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
    return broker, metrics


def broker_security(settings: NatsSettings) -> NatsSecurity | None:
    """User/password and TLS for faststream's NatsBroker, from the same settings."""
    context = tls_context(settings)
    if settings.user:
        return NatsUserPassword(settings.user, settings.password.get_secret_value(),
                                ssl_context=context)
    return NatsSecurity(ssl_context=context) if context is not None else None
