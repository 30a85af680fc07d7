"""Starts the Batch API emulator as a child process on a free loopback port."""

import subprocess
import sys
from dataclasses import dataclass

from batchbus.launcher import processes

READY_TIMEOUT = 20.0


@dataclass
class EmulatorProcess:
    process: subprocess.Popen[str]
    url: str

    def stop(self) -> None:
        processes.stop(self.process)


def start_emulator_process(processing_seconds: float) -> EmulatorProcess:
    process = subprocess.Popen(
        [sys.executable, "-m", "batchbus.emulator", "--port", "0",
         "--processing-seconds", str(processing_seconds)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        start_new_session=True)  # Ctrl-C reaches the launcher, which stops it in order
    found: list[str] = []

    def ready(line: str) -> bool:
        if line.startswith("emulator listening on "):
            found.append(line.split()[-1])
        return bool(found)

    if not processes.wait_for_output(process.stdout, ready, READY_TIMEOUT):
        process.kill()
        raise RuntimeError("the emulator did not start")
    return EmulatorProcess(process, found[0])
