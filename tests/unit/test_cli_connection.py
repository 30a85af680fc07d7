"""Which server the CLI uses and how it words NATS failures: always the server, never a
bare `ServiceUnavailableError: code=None err_code=None description='None'`."""

import os
import subprocess
import sys
from pathlib import Path

import nats.errors
import nats.js.errors
import pytest

from batchbus.cli import connection, state
from batchbus.cli.connection import MissingState, Target, describe_failure, resolve

URL = "nats://127.0.0.1:4567"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("NATS_URL", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    return tmp_path / "run" / "batchbus"


def test_the_state_folder_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert state.state_dir() == tmp_path / "run" / "batchbus"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert state.state_dir() == tmp_path / "cache" / "batchbus"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert state.state_dir() == Path.home() / ".cache" / "batchbus"


def test_resolve_prefers_the_flag_then_a_running_up_then_the_default(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve(None) == Target(connection.DEFAULT_NATS_URL, "default")
    state.write(state.UpRecord(os.getpid(), URL, "ready"))
    found = resolve(None)
    assert (found.url, found.origin, found.up and found.up.pid) == (URL, "up", os.getpid())
    assert resolve("nats://elsewhere:1").origin == "--nats"
    monkeypatch.setenv("NATS_URL", "nats://elsewhere:1")
    assert resolve("nats://elsewhere:1").origin == "NATS_URL"


def test_the_most_recently_started_live_up_wins_and_junk_is_skipped(isolated: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        state.write(state.UpRecord(os.getpid(), "nats://older:1", "ready",
                                   started_at="2025-01-01T00:00:00+00:00"))
        state.write(state.UpRecord(sleeper.pid, "nats://newer:1", "starting",
                                   started_at="2025-01-02T00:00:00+00:00"))
        (isolated / "up-999.json").write_text("{not json")
        running = state.running()
        assert running is not None and running.nats_url == "nats://newer:1"
        assert running.describe() == f"`batchbus up` (pid {sleeper.pid}, still starting)"
    finally:
        sleeper.kill()
        sleeper.wait()
    # Its process is gone: the older one (this test's own process) is the running one now,
    # and the dead one's file is cleaned up.
    running = state.running()
    assert running is not None and running.nats_url == "nats://older:1"
    assert not state.path_for(sleeper.pid).exists()


def test_remove_is_idempotent(isolated: Path) -> None:
    path = state.write(state.UpRecord(os.getpid(), URL))
    state.remove(path)
    state.remove(path)
    assert state.running() is None


TARGET = Target(URL, "NATS_URL")


@pytest.mark.parametrize("exc", [nats.js.errors.ServiceUnavailableError(),
                                 nats.errors.NoRespondersError()])
def test_jetstream_unavailable_is_one_line_naming_the_server(exc: Exception) -> None:
    message = describe_failure(TARGET, exc)
    assert message is not None and message.startswith(f"JetStream on NATS at {URL} did not answer")
    assert "code=None" not in message and "NATS_URL names it" in message


def test_other_nats_failures_name_the_server() -> None:
    refused = nats.js.errors.APIError(code=400, description="stream name in use")
    assert describe_failure(TARGET, refused) == \
        f"JetStream on NATS at {URL} refused the request: stream name in use"
    assert describe_failure(TARGET, nats.errors.TimeoutError()) == \
        f"NATS at {URL} did not answer in time (a JetStream request timed out)"
    assert URL in (describe_failure(TARGET, nats.errors.ConnectionClosedError()) or "")
    assert describe_failure(TARGET, ValueError("not ours")) is None


def test_missing_state_says_whose_server_and_what_to_do() -> None:
    given = describe_failure(TARGET, MissingState("stream BATCHBUS_RESULTS"))
    assert given == (f"stream BATCHBUS_RESULTS not found on NATS at {URL}: the batchbus "
                     "services have not run against it; NATS_URL names it: point it at the "
                     "server batchbus runs on, or start the services against this one")
    default = describe_failure(Target(URL, "default"), MissingState("stream X"))
    assert default is not None and "start batchbus with `batchbus up`" in default
    up = state.UpRecord(123, URL, "starting", path=Path("/run/up-123.json"))
    starting = describe_failure(Target(URL, "up", up), MissingState("stream X"))
    assert starting is not None and starting.endswith(
        "yet; `batchbus up` (pid 123, still starting) creates them as its services start")
