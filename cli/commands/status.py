"""`batchbus status`: the batches in flight (write-ahead records in KV `batches`) with their
request counts and age, and the tasks still waiting for a batch."""

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, NotFoundError
from rich.table import Table

from batchbus.cli.connection import NATS_HELP, MissingState, Target, connected, resolve
from batchbus.cli.console import stdout
from batchbus.cli.durations import describe_age
from batchbus.cli.errors import run
from batchbus.cli.text import plural
from batchbus.shared import subjects
from batchbus.shared.models import BatchRecord
from batchbus.shared.records import BatchRecords


@dataclass
class Queues:
    """Tasks not in a batch yet: unread by intake, and accepted but not yet submitted."""

    intake_pending: int | None = None
    batcher_pending: int | None = None
    batcher_held: int | None = None


@dataclass
class Status:
    records: list[BatchRecord]
    queues: Queues
    now: datetime

    def age(self, record: BatchRecord) -> float:
        return (self.now - (record.created_at or record.intent_at)).total_seconds()

    @property
    def in_flight(self) -> list[BatchRecord]:
        """Records whose results are not all out yet: intent, submitted, ended."""
        return [r for r in self.records if r.state != "delivered"]

    @property
    def delivered(self) -> list[BatchRecord]:
        """Every result out; the record waits for its task messages' acks, then goes."""
        return [r for r in self.records if r.state == "delivered"]

    def as_json(self) -> dict[str, Any]:
        """`batches`: every live record, each saying whether it is in flight; `counts`:
        how many of them are (ages in seconds, to the millisecond)."""
        return {"batches": [{"state": r.state, "in_flight": r.state != "delivered",
                             "batch_id": r.batch_id, "intent_id": r.intent_id,
                             "requests": r.requests, "bytes": r.bytes,
                             "age_seconds": round(self.age(r), 3),
                             "results_delivered": r.requests if r.state == "delivered"
                             else r.lines_done} for r in self.records],
                "counts": {"in_flight": len(self.in_flight), "delivered": len(self.delivered)},
                "queues": vars(self.queues)}


HELP = "\n\n".join([
    "Show the batches in flight, oldest first, and the tasks waiting for a batch.",
    "A batch is in flight until its results are out (states intent, submitted, ended); a "
    "delivered batch is listed apart while its record waits to be cleared.",
])


def status(
    as_json: Annotated[bool, typer.Option(
        "--json", help="print JSON instead of a table (ages in seconds, to the "
                       "millisecond)")] = False,
    nats_url: Annotated[str | None, typer.Option("--nats", envvar="NATS_URL", help=NATS_HELP,
                                                 show_default=False)] = None,
) -> None:
    """Show the batches in flight, oldest first, and the tasks waiting for a batch."""
    found = run(_status(resolve(nats_url)))
    if as_json:
        typer.echo(json.dumps(found.as_json(), indent=2))
        return
    console = stdout()
    if found.in_flight:
        console.print(table(found, found.in_flight,
                            f"{plural(len(found.in_flight), 'batch', 'batches')} in flight"))
    else:
        console.print("no batches in flight")
    if found.delivered:
        console.print(table(found, found.delivered, (
            f"{plural(len(found.delivered), 'batch', 'batches')} delivered (every result out), "
            "each record waiting to be cleared")))
    q = found.queues
    console.print(f"tasks waiting: {_n(q.intake_pending)} for intake, {_n(q.batcher_pending)} "
                  f"for the batcher, {_n(q.batcher_held)} held by the batcher while a batch "
                  "fills or is submitted")


def _n(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


async def _status(target: Target) -> Status:
    async with connected(target) as nc:
        js = nc.jetstream()
        try:
            records = BatchRecords(js, await js.key_value(subjects.KV_BATCHES),
                                   await js.object_store(subjects.OBJ_MANIFESTS))
            live = await records.all()
        except (BucketNotFoundError, NotFoundError) as exc:
            raise MissingState(f"batchbus state (KV bucket {subjects.KV_BATCHES})") from exc
        now = datetime.now(UTC)
        live.sort(key=lambda r: r.created_at or r.intent_at)
        return Status(live, await _queues(js), now)


async def _queues(js: JetStreamContext) -> Queues:
    queues = Queues()
    try:
        intake = await js.consumer_info(subjects.STREAM_TASKS, subjects.DURABLE_INTAKE)
        queues.intake_pending = intake.num_pending
    except NotFoundError:
        pass  # intake never ran: nothing to count
    try:
        batcher = await js.consumer_info(subjects.STREAM_INTERNAL, subjects.DURABLE_BATCHER)
        queues.batcher_pending, queues.batcher_held = batcher.num_pending, batcher.num_ack_pending
    except NotFoundError:
        pass
    return queues


def table(found: Status, records: list[BatchRecord], title: str) -> Table:
    view = Table("state", "batch", "requests", "age", "results delivered",
                 title=title, title_justify="left")
    for r in records:
        # Before the create returns there is no batch id yet, only our intent.
        batch = r.batch_id or f"(intent {r.intent_id})"
        # A delivered record waits for the batcher to see its tasks acked, then goes.
        done = {"ended": r.lines_done, "delivered": r.requests}.get(r.state)
        delivered = "" if done is None else f"{done:,}/{r.requests:,}"
        view.add_row(r.state, batch, f"{r.requests:,}", describe_age(found.age(r)), delivered)
    return view
