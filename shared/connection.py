"""How every batchbus connection to NATS authenticates and encrypts, from NatsSettings.

The client, the CLI and the launcher call nats.connect with `connect_options`; the services'
faststream broker builds its security from the same `tls_context` (shared/broker.py). Nothing
here imports faststream: the client installs without it.
"""

import ssl
from typing import Any

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

