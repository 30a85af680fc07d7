"""Shared by the benchmarks: a whole local stack, and reading a process's memory and CPU."""

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from emulator.config import EmulatorConfig
from emulator.server import EmulatorHandle, start_emulator
from launcher.nats_server import NatsServer, start_nats
from launcher.services import Pipeline

KEY = "sk-bench"


@dataclass
class Stack:
    nats: NatsServer
    emulator: EmulatorHandle
    pipeline: Pipeline


@contextmanager
def stack(processing_seconds: float = 0.5, **env: str) -> Iterator[Stack]:
    """nats-server, the emulator and the four services, stopped on exit."""
    workdir = Path(tempfile.mkdtemp(prefix="batchbus-bench-"))
    server = start_nats(str(workdir / "nats"))
    emulator = start_emulator(EmulatorConfig(processing_seconds=processing_seconds,
                                             api_keys={KEY}))
    pipeline = Pipeline({"NATS_URL": server.url, "ANTHROPIC_BASE_URL": emulator.url,
                         "ANTHROPIC_API_KEY": KEY, "BATCHER_DOUBT_SETTLE_SECONDS": "0", **env},
                        workdir / "logs")
    try:
        yield Stack(server, emulator, pipeline.start())
    finally:
        pipeline.stop()
        emulator.stop()
        server.stop()


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # clock ticks: 100 per second here
