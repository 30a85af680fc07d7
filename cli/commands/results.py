"""`batchbus results --tenant T [--since 1h] [--out FILE.jsonl]`: replay stored results."""

import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TextIO

import typer
from rich.markup import escape
from rich.table import Table

from batchbus.cli.connection import DEFAULT_NATS_URL, connected, require_streams
from batchbus.cli.console import stderr, stdout
from batchbus.cli.durations import parse_since
from batchbus.cli.errors import CliError, fail, run
from batchbus.cli.tally import model_of
from batchbus.client import replay
from batchbus.shared import subjects
from batchbus.shared.models import Result

SINCE_HELP = "only results stored since then: a duration back from now (30m, 1h30m, 2d) " \
             "or an RFC 3339 time (2025-06-01T09:00:00Z)"


def since_option(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_since(text, datetime.now(UTC))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--since") from None


def results(
    tenant: Annotated[str, typer.Option(envvar="BATCHBUS_TENANT", help="tenant token")],
    since: Annotated[str | None, typer.Option(help=SINCE_HELP)] = None,
    out: Annotated[Path | None, typer.Option(
        dir_okay=False, help="write the results as JSONL to this file (- for stdout) "
                             "instead of printing a table")] = None,
    nats_url: Annotated[str, typer.Option("--nats", envvar="NATS_URL")] = DEFAULT_NATS_URL,
) -> None:
    """Replay TENANT's stored final results, oldest first, and stop once caught up."""
    if not subjects.is_token(tenant):
        fail(f"--tenant must match {subjects.TOKEN_PATTERN}")
    start = since_option(since)
    if out is not None:
        count = run(_write(nats_url, tenant, start, None if str(out) == "-" else out))
        if str(out) != "-":
            stderr().print(f"wrote {count} results to {escape(str(out))}")
    else:
        found = run(_collect(nats_url, tenant, start))
        stdout().print(table(found))


async def _write(url: str, tenant: str, since: datetime | None, path: Path | None) -> int:
    """Writes JSONL to `path` (None: stdout); the file is created only once NATS answers."""
    async with connected(url) as nc:
        await require_streams(nc.jetstream(), subjects.STREAM_RESULTS)
        found = replay(nc.jetstream(), subjects.results_of(tenant), since)
        if path is None:
            return await _write_lines(found, sys.stdout)
        try:
            with path.open("w", encoding="utf-8") as file:
                return await _write_lines(found, file)
        except OSError as exc:
            raise CliError(f"cannot write {path}: {exc}") from exc


async def _write_lines(found: AsyncIterator[Result], file: TextIO) -> int:
    count = 0
    async for result in found:
        file.write(result.model_dump_json() + "\n")
        count += 1
    return count


async def _collect(url: str, tenant: str, since: datetime | None) -> list[Result]:
    async with connected(url) as nc:
        await require_streams(nc.jetstream(), subjects.STREAM_RESULTS)
        return [r async for r in replay(nc.jetstream(), subjects.results_of(tenant), since)]


def table(found: list[Result]) -> Table:
    view = Table("task_id", "status", "model", "tokens in/out", "batch $", "detail",
                 title=f"{len(found)} results", title_justify="left")
    for r in found:
        tokens = f"{r.usage.input_tokens}/{r.usage.output_tokens}" if r.usage else ""
        cost = f"{r.cost.batch_usd:.6f}" if r.cost else ""
        detail = f"{r.error.type}: {r.error.message}" if r.error else (r.batch_id or "")
        model = model_of(r) if r.message else ""
        view.add_row(r.task_id, r.status, model, tokens, cost, escape(detail[:80]))
    return view
