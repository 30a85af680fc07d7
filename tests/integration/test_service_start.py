"""A service that cannot run says why in one line and exits; signals stop it in every state."""

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from batchbus.launcher.nats_server import NatsServer, start_nats
from batchbus.launcher.services import free_port

pytestmark = pytest.mark.nats

BOUND = 20.0  # seconds any of these services may take to exit


class Run:
    """A service process and its output lines, read as they come."""

    def __init__(self, service: str, nats_url: str, **env: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", f"batchbus.services.{service}"], text=True,
            env=os.environ | {"NATS_URL": nats_url, "METRICS_PORT": str(free_port()), **env},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        self.ended = False  # the output is closed: every line is in
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self.changed:
                self.lines.append(line.rstrip())
                self.changed.notify_all()
        with self.changed:
            self.ended = True
            self.changed.notify_all()

    def wait_for(self, text: str) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: any(text in line for line in self.lines), BOUND)

    def finish(self) -> tuple[int, list[str]]:
        """The exit code and the lines of output, within BOUND seconds."""
        code = self.process.wait(BOUND)
        with self.changed:
            assert self.changed.wait_for(lambda: self.ended, BOUND)
        return code, [line for line in self.lines if line.strip()]


@pytest.fixture
def without_jetstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = start_nats(str(tmp_path_factory.mktemp("plain")), jetstream=False)
    yield server
    server.stop()


def test_unreachable_nats_ends_the_start_with_one_line() -> None:
    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    code, lines = Run("poller", url, NATS_CONNECT_TIMEOUT_SECONDS="2").finish()
    assert code == 1
    assert lines[-1].endswith(f"cannot reach NATS at {url} within 2s "
                              "(NATS_CONNECT_TIMEOUT_SECONDS); is it running, and is NATS_URL right?")
    assert not any("Traceback" in line for line in lines)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_a_service_still_waiting_for_nats(sig: signal.Signals) -> None:
    run = Run("intake", f"nats://127.0.0.1:{free_port()}")  # would wait 60 s for NATS
    run.wait_for("connecting to NATS")
    run.process.send_signal(sig)
    code, lines = run.finish()
    assert code == 0 and lines[-1].endswith("stopped by a signal before NATS answered")


def test_a_server_without_jetstream_is_named_with_the_fix(without_jetstream: NatsServer) -> None:
    code, lines = Run("batcher", without_jetstream.url).finish()
    assert code == 1
    host = without_jetstream.url.removeprefix("nats://")
    assert f"NATS at {host} (nats-server " in lines[-1]
    assert lines[-1].endswith("runs without JetStream; start it with -js "
                              "(or `jetstream {}` in its configuration)")
