"""Child-process plumbing shared by the launcher: wait for a ready line, stop politely."""

import subprocess
import threading
from collections.abc import Callable
from typing import IO


def wait_for_output(stream: IO[str] | None, done: Callable[[str], bool], timeout: float) -> bool:
    """Reads `stream` line by line (in a thread, so the wait is bounded) until `done` says
    a line completes the wait; False if the time ran out or the stream ended first."""
    assert stream is not None
    finished = threading.Event()
    succeeded = threading.Event()

    def read() -> None:
        for line in stream:
            if not succeeded.is_set() and done(line):
                succeeded.set()
                finished.set()
        finished.set()  # the process ended (keep draining until then, so it never blocks)

    threading.Thread(target=read, daemon=True).start()
    finished.wait(timeout)
    return succeeded.is_set()


def stop(process: subprocess.Popen[str] | subprocess.Popen[bytes] | None,
         timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
