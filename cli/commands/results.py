"""`batchbus results --tenant T [--since 1h] [--out FILE.jsonl]`: replay stored results."""

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TextIO

import typer
from rich.markup import escape
from rich.table import Table

from batchbus.cli.connection import NATS_HELP, Target, connected, require_streams, resolve
from batchbus.cli.console import stderr, stdout
from batchbus.cli.durations import parse_since
from batchbus.cli.errors import fail, run
from batchbus.cli.tally import Finals, finals, model_of
from batchbus.cli.text import plural
from batchbus.client import BatchbusClient
from batchbus.shared import subjects
from batchbus.shared.models import Result
from batchbus.shared.text import clip

SINCE_HELP = "only results stored since then: a duration back from now (30m, 1h30m, 2d) " \
             "or an RFC 3339 time (2025-06-01T09:00:00Z)"


def since_option(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_since(text, datetime.now(UTC))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--since") from None


HELP = "\n\n".join([
    "Replay TENANT's stored final results, oldest first, and stop once caught up.",
    "One result per task: a task rejected and then sent again shows only its later result "
    "(--all shows every stored result, the superseded ones marked).",
    "An answer too large for one NATS message (the result's message_object) is read back from "
    "the tenant's payload bucket, so --out writes it in `message` like any other.",
])


def results(
    tenant: Annotated[str, typer.Option(envvar="BATCHBUS_TENANT", help="tenant token")],
    since: Annotated[str | None, typer.Option(help=SINCE_HELP)] = None,
    out: Annotated[Path | None, typer.Option(
        dir_okay=False, help="write the results as JSONL to this file (- for stdout) "
                             "instead of printing a table")] = None,
    every: Annotated[bool, typer.Option(
        "--all", help="every stored result, also those superseded: the rejection of a task "
                      "that was sent again later (marked in the table)")] = False,
    nats_url: Annotated[str | None, typer.Option("--nats", envvar="NATS_URL", help=NATS_HELP,
                                                 show_default=False)] = None,
) -> None:
    """Replay TENANT's stored final results, oldest first, and stop once caught up."""
    if not subjects.is_token(tenant):
        fail(f"--tenant must match {subjects.TOKEN_PATTERN}")
    start = since_option(since)
    target = resolve(nats_url)
    stored = run(_collect(target, tenant, start))
    found = finals(stored)
    if out is not None:
        rows = stored if every else found.kept
        count = _write(rows, None if str(out) == "-" else out)
        if str(out) != "-":
            stderr().print(f"wrote {plural(count, 'result')} to {escape(str(out))}"
                           + _superseded_note(found, every))
    else:
        stdout().print(table(stored, found, every))


def _superseded_note(found: Finals, every: bool) -> str:
    n = len(found.superseded)
    if not n:
        return ""
    if every:
        return f", {n} of them superseded (rejections of a task with another final result)"
    return (f"; left out {n} superseded (rejections of a task with another final result), "
            "--all includes them")


def _write(rows: list[Result], path: Path | None) -> int:
    """Writes JSONL to `path` (None: stdout)."""
    if path is None:
        return _write_lines(rows, sys.stdout)
    try:
        with path.open("w", encoding="utf-8") as file:
            return _write_lines(rows, file)
    except OSError as exc:
        fail(f"cannot write {path}: {exc}")


def _write_lines(rows: list[Result], file: TextIO) -> int:
    for result in rows:
        file.write(result.model_dump_json() + "\n")
    return len(rows)


async def _collect(target: Target, tenant: str, since: datetime | None) -> list[Result]:
    async with connected(target) as nc:
        await require_streams(nc.jetstream(), subjects.STREAM_RESULTS)
        # Through the client: it reads back answers stored apart (message_object).
        client = BatchbusClient.over(nc, tenant)
        return [r async for r in client.history(since)]


DETAIL_WIDTH = 80


def table(stored: list[Result], found: Finals, every: bool = False) -> Table:
    superseded = len(found.superseded)
    if every:
        title = plural(len(stored), "result")
        if superseded:
            title += (f" ({superseded} superseded: rejections of a task that has another "
                      "final result)")
    else:
        title = plural(len(found.kept), "result")
        if superseded:
            title += (f" ({superseded} superseded not shown: rejections of a task that has "
                      "another final result; --all shows them)")
    view = Table("task_id", "status", "model", "tokens in/out", "batch $", "detail",
                 title=title, title_justify="left")
    rows = enumerate(stored) if every else ((-1, r) for r in found.kept)
    for index, r in rows:
        tokens = f"{r.usage.input_tokens}/{r.usage.output_tokens}" if r.usage else ""
        cost = f"{r.cost.batch_usd:.6f}" if r.cost else ""
        detail = f"{r.error.type}: {r.error.message}" if r.error else (r.batch_id or "")
        model = model_of(r) if r.message else ""
        status = f"{r.status} (superseded)" if index in found.superseded_at else r.status
        view.add_row(r.task_id, status, model, tokens, cost, escape(clip(detail, DETAIL_WIDTH)))
    return view
