"""`batchbus env`: the shell lines that point other programs at the running `batchbus up`."""

import shlex

import typer

from batchbus.cli import state
from batchbus.cli.errors import fail

HELP = "\n\n".join([
    "Print `export NATS_URL=...` for the running `batchbus up`.",
    '`eval "$(batchbus env)"` sets NATS_URL in this shell, for programs that read it (the '
    "Python client's examples, nats-py scripts). The batchbus command itself needs no "
    f"NATS_URL while `batchbus up` runs: it reads {state.STATE_FILE_HELP}, as this does.",
])


def env() -> None:
    running = state.running()
    if running is None:
        fail(f"no `batchbus up` is running (none recorded in {state.state_dir()}): start one "
             "with `batchbus up`")
    emulator = f", Batch API emulator at {running.emulator_url}" if running.emulator_url else ""
    starting = "; still starting" if running.state == "starting" else ""
    typer.echo(f"# batchbus up (pid {running.pid}{starting}){emulator}")
    typer.echo(f"export NATS_URL={shlex.quote(running.nats_url)}")
