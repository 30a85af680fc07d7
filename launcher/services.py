"""Starts the four services as child processes and waits until each is ready."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from batchbus.launcher import processes

SERVICES = ("intake", "batcher", "poller", "notifier")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    name: str
    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self, **extra_env: str) -> None:
        """Starts the process; `extra_env` applies to this run only (a failpoint, say)."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        self.process = subprocess.Popen(
            [sys.executable, "-m", f"batchbus.services.{self.name}"],
            env={**os.environ, **self.env, **extra_env, "METRICS_PORT": str(self.port)},
            stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)  # Ctrl-C reaches the launcher, which stops it in order
        log.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no acks, no goodbyes."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def pause(self) -> None:
        """SIGSTOP: the process holds its connections but does nothing, like a long GC pause."""
        assert self.process is not None and self.process.poll() is None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)

    def wait_exit(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)  # poll interval while the process boots
        raise RuntimeError(f"{self.name} not ready after {timeout}s; see {self.log_path}")

    def stop(self) -> None:
        processes.stop(self.process)

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"


@dataclass
class Pipeline:
    """The four services sharing one environment."""

    env: dict[str, str]
    log_dir: Path
    services: dict[str, Service] = field(default_factory=dict)

    def start(self) -> "Pipeline":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for name in SERVICES:
                self.add(name, name)
            for service in self.services.values():
                service.wait_ready()
        except BaseException:
            self.stop()  # one service failed to start: leave none of the others running
            raise
        return self

    def add(self, key: str, name: str, **extra_env: str) -> Service:
        """Starts one more process of service `name` (a replica) under `key`."""
        service = Service(name, free_port(), self.env, self.log_dir / f"{key}.log")
        service.start(**extra_env)
        self.services[key] = service
        return service

    def stop(self) -> None:
        for service in self.services.values():
            service.stop()
