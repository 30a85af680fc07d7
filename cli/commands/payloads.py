"""`batchbus payloads init TENANT...`: creates tenants' payload buckets (docs/payloads.md).

A tenant's own NATS user may not create its bucket (a stream create could mirror any other
stream), so an operator does it once per tenant, as a service's user (NATS_USER), which may.
"""

from typing import Annotated

import typer

from batchbus.cli.connection import NATS_HELP, Target, connected, resolve
from batchbus.cli.errors import fail, run
from batchbus.shared import subjects
from batchbus.shared.payloads import Payloads
from batchbus.shared.settings import NatsSettings

HELP = "Payload buckets: where params and answers too large for one NATS message go."
INIT_HELP = "\n\n".join([
    "Create each tenant's payload bucket (payloads_<tenant>), if it is missing.",
    "Run it once when adding a tenant, as a service's NATS user (NATS_USER, NATS_PASSWORD): "
    "a tenant's own user may not create streams. The retention and replicas come from "
    "NATS_PAYLOADS_MAX_AGE_SECONDS and NATS_REPLICAS, as the services read them.",
])

app = typer.Typer(name="payloads", help=HELP, no_args_is_help=True)


@app.command("init", help=INIT_HELP)
def init(
    tenants: Annotated[list[str], typer.Argument(help="tenant names", show_default=False)],
    nats_url: Annotated[str | None, typer.Option("--nats", envvar="NATS_URL", help=NATS_HELP,
                                                 show_default=False)] = None,
) -> None:
    bad = [t for t in tenants if not subjects.is_token(t)]
    if bad:
        fail(f"not a tenant name: {', '.join(bad)} (must match {subjects.TOKEN_PATTERN})")
    for tenant in run(_init(resolve(nats_url), tenants)):
        typer.echo(f"{subjects.payloads(tenant)}: ready")


async def _init(target: Target, tenants: list[str]) -> list[str]:
    settings = NatsSettings()
    async with connected(target) as nc:
        payloads = Payloads(nc.jetstream(), settings.payloads_max_age_seconds, settings.replicas)
        for tenant in tenants:
            await payloads.bucket(tenant)
    return tenants
