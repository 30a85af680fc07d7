"""Starts the Batch API emulator as a child process on a free loopback port."""

import subprocess
import sys
import threading
from dataclasses import dataclass

from launcher.services import ROOT

READY_TIMEOUT = 20.0


@dataclass
class EmulatorProcess:
    process: subprocess.Popen[str]
    url: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_emulator_process(processing_seconds: float) -> EmulatorProcess:
    process = subprocess.Popen(
        [sys.executable, "-m", "emulator", "--port", "0",
         "--processing-seconds", str(processing_seconds)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    found: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("emulator listening on "):
                found.append(line.split()[-1])
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(READY_TIMEOUT) or not found:
        process.kill()
        raise RuntimeError("the emulator did not start")
    return EmulatorProcess(process, found[0])
