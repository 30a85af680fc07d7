"""Shared by the benchmarks: a whole local stack, and reading a process's memory and CPU."""

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from batchbus.launcher import processes
from batchbus.launcher.nats_server import NatsServer, start_nats
from batchbus.launcher.services import Pipeline

KEY = "sk-bench"
EMULATOR_START_TIMEOUT = 30.0  # seconds


@dataclass
class Emulator:
    """The emulator in a process of its own, as the API is on another machine: in the
    benchmark's process it would take the client's CPU (and GIL) while it serves results."""

    process: subprocess.Popen[str]
    url: str

    def stop(self) -> None:
        processes.stop(self.process)


@dataclass
class Stack:
    nats: NatsServer
    emulator: Emulator
    pipeline: Pipeline


def start_emulator(processing_seconds: float) -> Emulator:
    workdir = Path(tempfile.mkdtemp(prefix="batchbus-bench-"))
    config, out = workdir / "emulator.json", workdir / "emulator.out"
    config.write_text(json.dumps({"api_keys": [KEY], "processing_seconds": processing_seconds}))
    with out.open("w") as stdout:  # a file, not a pipe nobody reads once it is up
        child = subprocess.Popen([sys.executable, "-m", "batchbus.emulator", "--port", "0", "--config",
                                  str(config)], stdout=stdout, text=True, start_new_session=True)
    deadline = time.monotonic() + EMULATOR_START_TIMEOUT
    while "listening on" not in (text := out.read_text()):
        if child.poll() is not None or time.monotonic() > deadline:
            processes.stop(child)
            raise RuntimeError("emulator did not start")
        time.sleep(0.05)  # poll interval of its ready line
    return Emulator(child, text.split("listening on", 1)[1].split()[0])


@contextmanager
def stack(processing_seconds: float = 0.5, **env: str) -> Iterator[Stack]:
    """nats-server, the emulator and the four services, stopped on exit."""
    workdir = Path(tempfile.mkdtemp(prefix="batchbus-bench-"))
    server = start_nats(str(workdir / "nats"))
    emulator = start_emulator(processing_seconds)
    pipeline = Pipeline({"NATS_URL": server.url, "ANTHROPIC_BASE_URL": emulator.url,
                         "ANTHROPIC_API_KEY": KEY, "BATCHER_DOUBT_SETTLE_SECONDS": "0", **env},
                        workdir / "logs")
    try:
        yield Stack(server, emulator, pipeline.start())
    finally:
        pipeline.stop()
        emulator.stop()
        server.stop()


def rss_mb(pid: int) -> float:
    """The process's resident memory now (VmRSS), in MB."""
    return _status_mb(pid, "VmRSS")


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MB."""
    return _status_mb(pid, "VmHWM")


def _status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field}")


def cpu_seconds(pid: int) -> float:
    """CPU time the process has used, to the nanosecond (its CPU-time clock: the 10 ms ticks
    of /proc/<pid>/stat are too coarse for a window of seconds)."""
    return time.clock_gettime_ns((~pid << 3) | 2) / 1e9  # MAKE_PROCESS_CPUCLOCK(pid, SCHED)


FIGURES = "BENCH-FIGURES "  # prefix of the one machine-readable line a benchmark prints


def emit(figures: dict[str, float]) -> None:
    """Prints the run's figures as one JSON line, for bench/report.py to take medians of."""
    print(FIGURES + json.dumps(figures), flush=True)


def profile(pid: int, seconds: int, name: str) -> subprocess.Popen[bytes]:
    """py-spy records the process for `seconds` (raw folded stacks in the temp dir). With
    BENCH_PROFILE_IDLE=1 it samples idle time too (where the wall time goes, not the CPU)."""
    out = Path(tempfile.gettempdir()) / f"{name}-{pid}.txt"
    print(f"py-spy -> {out}")
    spy = Path(sys.executable).with_name("py-spy")
    idle = ["--idle"] if os.environ.get("BENCH_PROFILE_IDLE") == "1" else []
    return subprocess.Popen([str(spy), "record", "-p", str(pid), "-f", "raw", "-d", str(seconds),
                             "-r", "250", "--nonblocking", *idle, "-o", str(out)],
                            stdout=subprocess.DEVNULL)
