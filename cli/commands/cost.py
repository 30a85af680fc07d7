"""`batchbus cost [--tenant T] [--since 7d]`: per model, what batching cost, what the same
calls would have cost at real-time prices, and what was saved — from the stored results."""

import json
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from batchbus.cli.commands.results import SINCE_HELP, since_option
from batchbus.cli.connection import NATS_HELP, Target, connected, require_streams, resolve
from batchbus.cli.console import stdout
from batchbus.cli.errors import fail, run
from batchbus.cli.tally import USD_PLACES, ModelCost, Tally
from batchbus.cli.text import plural
from batchbus.client import BatchbusClient, replay
from batchbus.shared import subjects

HELP = "\n\n".join([
    "Show spent, would-have-spent at real-time prices, and saved, per model.",
    "The table holds the results that ran; the line under it counts the stored results that "
    "did not (rejected, or errored before the model ran), which cost nothing.",
])


def cost(
    tenant: Annotated[str | None, typer.Option(
        envvar="BATCHBUS_TENANT", help="one tenant (default: all tenants)")] = None,
    since: Annotated[str | None, typer.Option(help=SINCE_HELP)] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help=f"print JSON: money as decimal strings with {USD_PLACES} places "
                       "(rounded half to even), counts as integers")] = False,
    nats_url: Annotated[str | None, typer.Option("--nats", envvar="NATS_URL", help=NATS_HELP,
                                                 show_default=False)] = None,
) -> None:
    """Show spent, would-have-spent at real-time prices, and saved, per model."""
    if tenant is not None and not subjects.is_token(tenant):
        fail(f"--tenant must match {subjects.TOKEN_PATTERN}")
    tally = run(_tally(resolve(nats_url), tenant, since_option(since)))
    if as_json:
        typer.echo(json.dumps(report(tally, tenant, since), indent=2))
        return
    console = stdout()
    if not tally.models:
        who = f"tenant {tenant}" if tenant else "any tenant"
        console.print(f"no results that ran for {who}" + (f" since {since}" if since else "")
                      + f" ({plural(tally.count, 'result')} stored{_not_ran(tally, ': ')})")
        return
    console.print(table(tally, tenant))
    for line in notes(tally):
        console.print(line)


def report(tally: Tally, tenant: str | None, since: str | None) -> dict[str, Any]:
    """`--json`: `results` = `ran_results` + the sum of `not_ran_by_status`, and
    `ran_results` = `total.results` = the sum of the models' `results`."""
    return {"tenant": tenant, "since": since, "results": tally.count,
            "ran_results": tally.ran, "not_ran_by_status": dict(sorted(tally.not_ran.items())),
            "models": {m: c.as_json() for m, c in sorted(tally.models.items())},
            "total": tally.total.as_json(), "unpriced_results": tally.unpriced,
            "usd_places": USD_PLACES}


def _not_ran(tally: Tally, lead: str) -> str:
    if not tally.not_ran:
        return ""
    return lead + ", ".join(f"{status} {n:,}" for status, n in sorted(tally.not_ran.items()))


def notes(tally: Tally) -> list[str]:
    """What the table leaves out, so its count and the stored count agree."""
    found = []
    not_ran = sum(tally.not_ran.values())
    if not_ran:
        found.append(f"{plural(tally.count, 'result')} stored: {tally.ran:,} ran (above), "
                     f"{not_ran:,} did not and cost nothing{_not_ran(tally, ' — ')}")
    if tally.unpriced:
        found.append(f"{plural(tally.unpriced, 'result')} of models missing from the price "
                     "table counted in tokens but not in dollars")
    return found


async def _tally(target: Target, tenant: str | None, since: datetime | None) -> Tally:
    subject = subjects.results_of(tenant) if tenant else subjects.RESULTS_ALL
    tally = Tally()
    async with connected(target) as nc:
        await require_streams(nc.jetstream(), subjects.STREAM_RESULTS)
        # An answer stored apart names its model only inside: read back per its tenant.
        clients: dict[str, BatchbusClient] = {}
        async for result in replay(nc.jetstream(), subject, since):
            if result.message_object is not None and result.message is None:
                client = clients.setdefault(result.tenant,
                                            BatchbusClient.over(nc, result.tenant))
                result = await client.with_answer(result)
            tally.add(result)
    return tally


def table(tally: Tally, tenant: str | None) -> Table:
    who = f"tenant {tenant}" if tenant else "all tenants"
    view = Table("model", "results", "tokens in", "tokens out", "spent",
                 "at real-time prices", "saved", "saved %",
                 title=f"cost of {plural(tally.ran, 'result')} that ran, {who}",
                 title_justify="left")
    rows = sorted(tally.models.items())
    for model, c in rows:
        view.add_row(model, *_cells(c))
    if len(rows) != 1:
        view.add_row("total", *_cells(tally.total), style="bold")
    return view


def _cells(c: ModelCost) -> list[str]:
    share = f"{c.saved_share:.0%}" if c.saved_share is not None else ""
    return [f"{c.results:,}", f"{c.input_tokens:,}", f"{c.output_tokens:,}",
            f"${c.batch_usd:.6f}", f"${c.realtime_usd:.6f}", f"${c.saved_usd:.6f}", share]
