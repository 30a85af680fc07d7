"""`batchbus submit FILE.jsonl --tenant T [--follow]`: publish tasks; with --follow, show
progress until every task is final, then a summary."""

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer
from nats.aio.client import Client
from nats.aio.msg import Msg
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from batchbus.cli.connection import NATS_HELP, Target, connected, require_tasks_and_results, resolve
from batchbus.cli.console import stderr, stdout
from batchbus.cli.errors import EXIT_FAILED_TASKS, CliError, fail, run
from batchbus.cli.loader import Checked, LoadError, Problem, by_reference, load_tasks, unsendable
from batchbus.cli.tally import Tally
from batchbus.cli.text import plural
from batchbus.client import BatchbusClient
from batchbus.shared import subjects
from batchbus.shared.models import BatchEvent, Task
from batchbus.shared.text import clip

SHOWN_FAILURES = 10

HELP = "\n\n".join([
    "Publish the tasks in FILE (JSONL) for TENANT.",
    'Each line is a Task ({"task_id", "params", "metadata"}) or a bare Messages API body '
    '({"model", "max_tokens", "messages", ...}). A bare body gets the task id '
    "<file name>-<line number>-<digest of the body>, so submitting the same file again is "
    "deduplicated by batchbus rather than paid for twice; its result's metadata names the "
    "file and line.",
    "Every line is checked before anything is published: JSON, the Task as intake checks it, "
    "the model catalog's rules (retired models, forbidden params, max_tokens) and its size. "
    "If any line is bad, every bad line is listed (FILE:LINE: reason) and nothing is "
    "published.",
    "A line too large for one NATS message (the server's max_payload less 4 KB) is sent by "
    "reference: its params are stored in the tenant's object store bucket payloads_TENANT "
    "first, and the task names them (docs/payloads.md). Params over 32 MiB, the Messages "
    "API's request size limit, make a bad line.",
    "Without --follow, publishes every task and returns once JetStream has stored each one; "
    "intake then drops a task id it has already accepted, and checks again one it rejected.",
    "With --follow, shows progress until every task has its final result, prints a summary, "
    "and exits with 1 when any task did not succeed. A task that already has a final result "
    "is not published again (its stored result counts), except a rejected one: a task whose "
    "earlier copy was rejected is published again.",
])


@dataclass
class BatchActivity:
    """Batches seen on the event subject since we started (all tenants': events do not say
    whose tasks a batch holds)."""

    running: set[str] = field(default_factory=set)
    ended: set[str] = field(default_factory=set)

    def add(self, event: BatchEvent) -> None:
        if event.event == "ended":
            self.running.discard(event.batch_id)
            self.ended.add(event.batch_id)
        elif event.batch_id not in self.ended:
            self.running.add(event.batch_id)

    def describe(self) -> str:
        return f"batches: {len(self.running)} running, {len(self.ended)} ended"


def submit(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True,
                                         help="JSONL: one Task or Messages API body a line")],
    tenant: Annotated[str, typer.Option(envvar="BATCHBUS_TENANT", help="tenant token")],
    follow: Annotated[bool, typer.Option(help="wait for every result, with progress")] = False,
    nats_url: Annotated[str | None, typer.Option("--nats", envvar="NATS_URL", help=NATS_HELP,
                                                 show_default=False)] = None,
) -> None:
    """Publish the tasks in FILE for TENANT (see HELP)."""
    if not subjects.is_token(tenant):
        fail(f"--tenant must match {subjects.TOKEN_PATTERN}")
    try:
        checked = load_tasks(file)
    except LoadError as exc:
        fail(str(exc))
    for line in checked.warning_listing():
        stderr().print(escape(line))
    target = resolve(nats_url)
    if follow:
        tally = run(_follow(target, tenant, checked))
        print_summary(stdout(), tenant, file, tally)
        if tally.not_succeeded:
            raise typer.Exit(EXIT_FAILED_TASKS)
    else:
        count, stored = run(_publish(target, tenant, checked))
        apart = (f" ({stored} with their params in object store {subjects.payloads(tenant)})"
                 if stored else "")
        stdout().print(f"published {count} tasks{apart} to {subjects.tasks(tenant)} on "
                       f"{target.named}, each stored by JetStream; see their results with: "
                       f"batchbus results --tenant {tenant}")


def refusal(checked: Checked, problems: list[Problem], note: str | None = None) -> CliError:
    """Every bad line, one each, then one line saying nothing was published."""
    bad = len({p.line for p in problems})
    summary = (f"{checked.label}: {bad} of {plural(checked.count, 'line')} "
               f"{'is' if bad == 1 else 'are'} bad; nothing was published"
               + (f" ({note})" if note else ""))
    return CliError(summary, checked.listing(problems))


@contextlib.asynccontextmanager
async def checked_connection(target: Target, checked: Checked) -> AsyncIterator[Client]:
    """A connection once every line is good, sizes included (the server's max_payload);
    else CliError listing every bad line. With bad lines already, the server is still asked
    for its max_payload, so one run lists the lines it cannot take too."""
    try:
        async with connected(target) as nc:
            problems = checked.problems + unsendable(checked, nc.max_payload, target.named)
            if problems:
                raise refusal(checked, problems)
            yield nc
    except CliError as exc:
        if not checked.problems or exc.details:
            raise
        # The server did not answer (or cannot run batchbus): the bad lines still count.
        raise refusal(checked, checked.problems, "line sizes were not checked: "
                      + str(exc)) from None


async def _publish(target: Target, tenant: str, checked: Checked) -> tuple[int, int]:
    """Tasks published, and how many of them went with their params stored apart."""
    async with checked_connection(target, checked) as nc:
        await require_tasks_and_results(nc.jetstream())
        count = await BatchbusClient.over(nc, tenant).publish_many(checked.tasks)
        return count, by_reference(checked, nc.max_payload)


async def _follow(target: Target, tenant: str, checked: Checked) -> Tally:
    async with checked_connection(target, checked) as nc:
        await require_tasks_and_results(nc.jetstream())
        return await follow(nc, tenant, checked.tasks, stderr())


async def follow(nc: Client, tenant: str, tasks: list[Task], console: Console) -> Tally:
    """Submits `tasks` and draws a progress bar until each has its final result."""
    tally = Tally()
    activity = BatchActivity()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[batches]}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("results", total=len(tasks), batches=activity.describe())

        async def on_event(msg: Msg) -> None:
            with contextlib.suppress(ValueError):  # an event we cannot read is only progress
                activity.add(BatchEvent.model_validate_json(msg.data))
                progress.update(bar, batches=activity.describe())

        events = await nc.subscribe(subjects.events_of(tenant), cb=on_event)
        try:
            client = BatchbusClient.over(nc, tenant)
            async with contextlib.aclosing(client.submit_many(tasks)) as results:
                async for result in results:
                    tally.add(result)
                    progress.update(bar, advance=1)
        finally:
            await events.unsubscribe()
    return tally


def print_summary(console: Console, tenant: str, file: Path, tally: Tally) -> None:
    total = tally.total
    console.print(f"\nbatchbus submit — {plural(tally.count, 'task')} of tenant {tenant} from "
                  f"{escape(file.name)}")
    console.print("  by status      " + ", ".join(
        f"{status} {n}" for status, n in sorted(tally.statuses.items())))
    if tally.routes:
        console.print("  by route       " + ", ".join(
            f"{route} {n}" for route, n in sorted(tally.routes.items())))
    console.print(f"  tokens         {total.input_tokens:,} input, {total.output_tokens:,} output")
    # A real-time result's batch_usd is what it cost at full price: the sum is what was spent.
    console.print(f"  spent          ${total.batch_usd:.6f}")
    console.print(f"  real-time      ${total.realtime_usd:.6f} (the same calls at full price)")
    share = f" ({total.saved_share:.0%})" if total.saved_share is not None else ""
    console.print(f"  saved          ${total.saved_usd:.6f}{share}")
    if tally.unpriced:
        console.print(f"  unpriced       {tally.unpriced} results of models missing from the "
                      "price table")
    if tally.not_succeeded:
        console.print(f"  not succeeded  {len(tally.not_succeeded)}:")
        for result in tally.not_succeeded[:SHOWN_FAILURES]:
            reason = f"{result.error.type}: {result.error.message}" if result.error else ""
            console.print(f"    {result.task_id}  {result.status}  {escape(clip(reason, 100))}")
        if len(tally.not_succeeded) > SHOWN_FAILURES:
            console.print(f"    … and {len(tally.not_succeeded) - SHOWN_FAILURES} more "
                          f"(batchbus results --tenant {tenant})")
