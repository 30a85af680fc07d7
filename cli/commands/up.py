"""`batchbus up`: NATS (embedded unless one answers), the Batch API emulator (unless the real
API is asked for) and the four services, in one terminal until Ctrl-C."""

import asyncio
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console

from batchbus import extras
from batchbus.cli import state
from batchbus.cli.connection import probe
from batchbus.cli.console import stdout
from batchbus.cli.errors import fail
from batchbus.launcher.emulator import EmulatorProcess, start_emulator_process
from batchbus.launcher.nats_server import NatsServer, start_nats
from batchbus.launcher.services import Pipeline

Part = NatsServer | EmulatorProcess | Pipeline

# With the emulator, batches end in seconds; poll and flush to match (unless set already).
LOCAL_TIMINGS = {"BATCHER_MAX_WAIT_SECONDS": "2", "POLLER_INTERVAL_SECONDS": "1",
                 "POLLER_MAX_INTERVAL_SECONDS": "2"}
EMULATOR_KEY = "sk-local-emulator"


UP_HELP = "\n\n".join([
    "Start batchbus locally: NATS, the emulator and intake, batcher, poller, notifier.",
    "While it runs, `batchbus up` records its NATS URL (and the emulator's) in "
    f"{state.STATE_FILE_HELP} and removes the file on exit: the batchbus command in another "
    "terminal then finds the server without NATS_URL, and `batchbus env` prints the "
    "`export NATS_URL=...` line for other programs.",
])


def up(
    emulator: Annotated[bool, typer.Option(
        help="run the local Batch API emulator; --no-emulator uses the real API "
             "(needs ANTHROPIC_API_KEY, and costs money)")] = True,
    nats_url: Annotated[str | None, typer.Option(
        "--nats", envvar="NATS_URL", help="use this NATS server if it answers; otherwise an "
        "embedded nats-server is started")] = None,
    store: Annotated[Path | None, typer.Option(
        file_okay=False, help="JetStream store of the embedded server (default: a new "
        "temporary folder, so state does not outlive the run)")] = None,
    logs: Annotated[Path | None, typer.Option(
        file_okay=False, help="where the services write their logs (default: temporary)")] = None,
    processing_seconds: Annotated[float, typer.Option(
        help="how long the emulator takes to process a batch")] = 3.0,
) -> None:
    try:
        extras.require("local", "batchbus up")
    except extras.MissingExtra as exc:
        fail(str(exc))
    if not emulator and not os.environ.get("ANTHROPIC_API_KEY"):
        fail("--no-emulator talks to the real API and needs ANTHROPIC_API_KEY")
    console = stdout()
    reuse = _usable(nats_url)
    if (other := state.running()) is not None:
        console.print(f"  note      {other.describe()} already runs NATS at {other.nats_url}; "
                      "this one starts a stack of its own, which the batchbus command then "
                      "uses by default")
    workdir = Path(tempfile.mkdtemp(prefix="batchbus-up-"))
    stack: list[Part] = []
    previous = signal.signal(signal.SIGTERM, _interrupt)  # stop cleanly under a supervisor
    # Python leaves SIGINT ignored when it starts ignored (a background job of a
    # non-interactive shell); Ctrl-C must always stop the stack.
    previous_int = signal.signal(signal.SIGINT, _interrupt)
    code = 0
    recorded: Path | None = None
    try:
        url = _nats(console, stack, nats_url, reuse, store or workdir / "nats")
        env = {"NATS_URL": url}
        fake_url = None
        if emulator:
            fake = start_emulator_process(processing_seconds)
            stack.append(fake)
            fake_url = fake.url
            env |= {"ANTHROPIC_BASE_URL": fake.url, "ANTHROPIC_API_KEY": EMULATOR_KEY}
            env |= {k: v for k, v in LOCAL_TIMINGS.items() if k not in os.environ}
            console.print(f"  API       the Batch API emulator at {fake.url}")
        else:
            console.print("  API       the real Anthropic API (this costs money; batches "
                          "take minutes to hours)")
        pipeline = Pipeline(env, logs or workdir / "logs")
        record = state.UpRecord(os.getpid(), url, "starting", fake_url, str(pipeline.log_dir))
        recorded = state.write(record)  # a CLI started meanwhile hears "still starting"
        stack.append(pipeline)
        pipeline.start()
        state.write(replace(record, state="ready"))
        console.print("  services  intake, batcher, poller, notifier; metrics at " + ", ".join(
            s.metrics_url for s in pipeline.services.values()))
        console.print(f"  logs      {pipeline.log_dir}")
        console.print(f"  recorded  {recorded} (removed on exit)")
        console.print("\nbatchbus is up. In another terminal the batchbus command finds it by "
                      f"itself; for other programs:\n  export NATS_URL={shlex.quote(url)}    "
                      "# or: eval \"$(batchbus env)\"\n"
                      "  batchbus submit tasks.jsonl --tenant acme --follow\n"
                      "Press Ctrl-C to stop.")
        died = _wait_for_exit(stack)
        console.print(f"[red]{died} exited unexpectedly[/]; stopping everything")
        code = 1
    except KeyboardInterrupt:
        console.print("\nstopping")
    except RuntimeError as exc:  # a part that did not start; the launcher names it
        console.print(f"[bold red]error:[/] {exc}")
        code = 2
    finally:
        # A second Ctrl-C must not cut the shutdown short and leave services orphaned; each
        # part's stop() is bounded (terminate, then kill after a timeout).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if recorded is not None:  # first, so no other terminal picks a stopping stack
            state.remove(recorded)
        for part in reversed(stack):
            part.stop()
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous)
        console.print("stopped everything `batchbus up` started")
        if code == 0:  # the temporary store and logs go with the run; --store/--logs stay
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            console.print(f"kept the logs and the JetStream store in {workdir}")
    raise typer.Exit(code)


def _usable(nats_url: str | None) -> str | None:
    """The server asked for, when it answers and can run batchbus; None when it does not
    answer (an embedded one is started). One line and exit 2 when it answers but cannot
    run batchbus (too old, no JetStream): using it would fail later, and less clearly."""
    if not nats_url:
        return None
    answer = asyncio.run(probe(nats_url))
    if answer.problem is not None:
        origin = "NATS_URL" if os.environ.get("NATS_URL") == nats_url else "--nats"
        fail(f"{answer.problem} — {origin} names it; unset NATS_URL (and drop --nats) for "
             "`batchbus up` to start a nats-server of its own")
    return nats_url if answer.fit else None


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _nats(console: Console, stack: list[Part], url: str | None, reuse: str | None,
          store: Path) -> str:
    if reuse is not None:
        console.print(f"  NATS      using the server at {reuse}")
        return reuse
    if url:
        console.print(f"  NATS      {url} does not answer; starting an embedded server")
    server = start_nats(str(store))
    stack.append(server)
    console.print(f"  NATS      embedded nats-server with JetStream at {server.url} "
                  f"(store {server.store_dir})")
    return server.url


def _wait_for_exit(stack: list[Part]) -> str:
    """Blocks until a child process exits by itself; returns its name. One waiting thread
    per child turns each exit into an event, so nothing polls; Ctrl-C interrupts the wait."""
    processes: dict[str, subprocess.Popen[str] | subprocess.Popen[bytes]] = {}
    for part in stack:
        if isinstance(part, Pipeline):
            processes |= {name: s.process for name, s in part.services.items()
                          if s.process is not None}
        elif isinstance(part, NatsServer):
            processes["nats-server"] = part.process
        else:
            processes["emulator"] = part.process
    exited = threading.Event()
    names: list[str] = []

    def watch(name: str, process: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
        process.wait()
        names.append(name)
        exited.set()

    for name, process in processes.items():
        threading.Thread(target=watch, args=(name, process), daemon=True).start()
    exited.wait()
    return names[0]
