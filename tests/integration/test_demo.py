"""`make demo` end to end: it finishes, prints its summary, and leaves nothing running."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


pytestmark = [pytest.mark.nats, pytest.mark.slow]


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line or environment contains `text`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        for part in ("cmdline", "environ"):
            try:
                if text.encode() in (proc / part).read_bytes():
                    found.append(int(proc.name))
                    break
            except OSError:
                continue
    return found


def test_the_demo_runs_end_to_end_and_cleans_up() -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NATS_", "ANTHROPIC_", "BATCHBUS_"))}
    env["BATCHBUS_DEMO_TICKETS"] = "200"
    done = subprocess.run([sys.executable, "-m", "batchbus.launcher.demo"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "batchbus demo — summary" in out
    assert "rejected 4, succeeded 200" in out
    assert re.search(r"retried +2 tasks", out)
    realtime = float(re.search(r"real-time cost +\$([\d.]+)", out)[1])  # type: ignore[index]
    batch = float(re.search(r"batch cost +\$([\d.]+)", out)[1])  # type: ignore[index]
    assert batch == pytest.approx(realtime / 2, abs=1e-4) and batch > 0
    url = re.search(r"nats-server with JetStream at (\S+)", out)[1]  # type: ignore[index]
    workdir = re.search(r"logs in (\S+)/logs", out)[1]  # type: ignore[index]
    assert processes_mentioning(f"NATS_URL={url}") == []
    assert processes_mentioning(workdir) == []
    assert not Path(workdir).exists()  # its JetStream store and logs went with it
