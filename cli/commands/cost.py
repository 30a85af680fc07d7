"""`batchbus cost [--tenant T] [--since 7d]`: per model, what batching cost, what the same
calls would have cost at real-time prices, and what was saved — from the stored results."""

import json
from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from batchbus.cli.commands.results import SINCE_HELP, since_option
from batchbus.cli.connection import DEFAULT_NATS_URL, connected, require_streams
from batchbus.cli.console import stdout
from batchbus.cli.errors import fail, run
from batchbus.cli.tally import ModelCost, Tally
from batchbus.client import replay
from batchbus.shared import subjects


def cost(
    tenant: Annotated[str | None, typer.Option(
        envvar="BATCHBUS_TENANT", help="one tenant (default: all tenants)")] = None,
    since: Annotated[str | None, typer.Option(help=SINCE_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON (exact decimal strings)")]
    = False,
    nats_url: Annotated[str, typer.Option("--nats", envvar="NATS_URL")] = DEFAULT_NATS_URL,
) -> None:
    """Show spent, would-have-spent at real-time prices, and saved, per model."""
    if tenant is not None and not subjects.is_token(tenant):
        fail(f"--tenant must match {subjects.TOKEN_PATTERN}")
    tally = run(_tally(nats_url, tenant, since_option(since)))
    if as_json:
        typer.echo(json.dumps({
            "tenant": tenant, "since": since, "results": tally.count,
            "models": {m: c.as_json() for m, c in sorted(tally.models.items())},
            "total": tally.total.as_json(), "unpriced_results": tally.unpriced}, indent=2))
        return
    console = stdout()
    if not tally.models:
        who = f"tenant {tenant}" if tenant else "any tenant"
        console.print(f"no results that ran for {who}" + (f" since {since}" if since else "")
                      + f" ({tally.count} results in all)")
        return
    console.print(table(tally, tenant))
    if tally.unpriced:
        console.print(f"{tally.unpriced} results of models missing from the price table are "
                      "counted in tokens but not in dollars")


async def _tally(url: str, tenant: str | None, since: datetime | None) -> Tally:
    subject = subjects.results_of(tenant) if tenant else subjects.RESULTS_ALL
    tally = Tally()
    async with connected(url) as nc:
        await require_streams(nc.jetstream(), subjects.STREAM_RESULTS)
        async for result in replay(nc.jetstream(), subject, since):
            tally.add(result)
    return tally


def table(tally: Tally, tenant: str | None) -> Table:
    who = f"tenant {tenant}" if tenant else "all tenants"
    view = Table("model", "results", "tokens in", "tokens out", "spent",
                 "at real-time prices", "saved", "saved %",
                 title=f"cost of {tally.count} results, {who}", title_justify="left")
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
