"""How the CLI fails: one clear line on stderr and an exit code, never a traceback for
conditions a user can fix (NATS unreachable, a bad input line, batchbus not started)."""

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any, NoReturn, TypeVar

import nats.errors
import nats.js.errors
import typer
from rich.markup import escape

from batchbus.cli.console import stderr
from batchbus.shared.payloads import PayloadBucketMissing

T = TypeVar("T")

EXIT_FAILED_TASKS = 1  # the command ran, but some task did not succeed
EXIT_ERROR = 2  # the command could not do its job (as typer's own usage errors)
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A failure to report as one line, without a traceback; `details` (say, one line per
    bad input line) are printed before it."""

    def __init__(self, message: str, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.details = list(details)


def fail(message: str, code: int = EXIT_ERROR, details: Sequence[str] = ()) -> NoReturn:
    console = stderr()
    for line in details:
        console.print(escape(line))
    console.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def run(main: Coroutine[Any, Any, T]) -> T:
    """Runs a command's coroutine, turning known failures into a message and an exit code."""
    try:
        return asyncio.run(main)
    except CliError as exc:
        fail(str(exc), details=exc.details)
    except PayloadBucketMissing as exc:  # a tenant's first large task, before its bucket
        fail(str(exc))
    # What follows happens only outside `connected`, which names the server itself.
    except nats.errors.NoRespondersError:
        fail("NATS answered, but without JetStream: batchbus needs nats-server -js (2.12+)")
    except nats.js.errors.APIError as exc:
        fail(f"JetStream refused the request: {exc.description or type(exc).__name__}")
    except nats.errors.Error as exc:
        fail(f"NATS: {exc or type(exc).__name__}")
    except OSError as exc:
        fail(str(exc) or type(exc).__name__)
    except KeyboardInterrupt:
        fail("interrupted; published tasks stay queued in batchbus, and `batchbus results` "
             "replays their results later", EXIT_INTERRUPTED)
