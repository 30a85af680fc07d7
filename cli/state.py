"""Where a running `batchbus up` is: one small JSON file per `batchbus up` process, so the
CLI in another terminal finds its NATS server without NATS_URL.

The files live in `$XDG_RUNTIME_DIR/batchbus/` (a per-user folder the system empties at
logout), else in `$XDG_CACHE_HOME/batchbus/` or `~/.cache/batchbus/`, and are named
`up-<pid>.json`. `batchbus up` writes its file once its NATS server answers and removes it
on exit; a file whose process is gone (a `batchbus up` killed with SIGKILL) is ignored, and
removed by the next reader.
"""

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

PREFIX = "up-"
STATE_FILE_HELP = "up-<pid>.json in $XDG_RUNTIME_DIR/batchbus/ (else in ~/.cache/batchbus/)"

UpState = Literal["starting", "ready"]


def state_dir() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "batchbus"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "batchbus"


@dataclass(frozen=True)
class UpRecord:
    """What one running `batchbus up` announces."""

    pid: int
    nats_url: str
    state: UpState = "starting"  # "ready" once the four services are up
    emulator_url: str | None = None
    logs: str | None = None
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    path: Path | None = field(default=None, compare=False)  # where it was read from

    def describe(self) -> str:
        """`batchbus up` (pid 123, still starting)"""
        starting = ", still starting" if self.state == "starting" else ""
        return f"`batchbus up` (pid {self.pid}{starting})"

    def as_json(self) -> dict[str, object]:
        fields = asdict(self)
        del fields["path"]
        return fields


def path_for(pid: int) -> Path:
    return state_dir() / f"{PREFIX}{pid}.json"


def write(record: UpRecord) -> Path:
    """Writes (or rewrites) this process's file atomically, readable by the user only."""
    folder = state_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = path_for(record.pid)
    temporary = path.with_suffix(f".tmp-{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        json.dump(record.as_json(), file)
    os.replace(temporary, path)
    return path


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def alive(pid: int) -> bool:
    """Whether a process with this id exists (signal 0 checks without sending anything)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, but belongs to someone else
    return True


def read(path: Path) -> UpRecord | None:
    """The record in `path`, or None when it is unreadable or not one of ours."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        record = UpRecord(pid=int(data["pid"]), nats_url=str(data["nats_url"]),
                          state="ready" if data.get("state") == "ready" else "starting",
                          emulator_url=data.get("emulator_url"), logs=data.get("logs"),
                          started_at=str(data.get("started_at", "")), path=path)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record if record.nats_url else None


def running() -> UpRecord | None:
    """The most recently started `batchbus up` that is still running, if any. Files of
    processes that are gone are removed on the way."""
    folder = state_dir()
    try:
        paths = sorted(folder.glob(f"{PREFIX}*.json"))
    except OSError:
        return None
    found: list[UpRecord] = []
    for path in paths:
        record = read(path)
        if record is None:
            continue
        if alive(record.pid):
            found.append(record)
        else:
            remove(path)  # its `batchbus up` was killed before it could clean up
    return max(found, key=lambda r: r.started_at, default=None)
