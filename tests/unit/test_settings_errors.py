"""A service started with a bad setting says in one line which variable to fix and stops,
without a traceback (pydantic's would name its field, `max_requests`, not the variable)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

CASES = [
    ("batcher", {"BATCHER_MAX_REQUESTS": "0"},
     "error: BATCHER_MAX_REQUESTS: Input should be greater than or equal to 1"),
    ("poller", {"NATS_REPLICAS": "9"},  # a setting of a composed part (NatsSettings)
     "error: NATS_REPLICAS: Input should be less than or equal to 5"),
    ("notifier", {"METRICS_PORT": "ninety"},  # read through an alias
     "error: METRICS_PORT: Input should be a valid integer, unable to parse string as an integer"),
    ("intake", {"INTAKE_BUDGETS": "acme=lots"},
     "error: INTAKE_BUDGETS: Value error, budget of acme is not a number: 'lots'"),
]


@pytest.mark.parametrize(("service", "env", "line"), CASES, ids=[c[0] for c in CASES])
def test_a_bad_setting_is_one_line_naming_the_variable(service: str, env: dict[str, str],
                                                      line: str, tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("NATS_", "BATCHER_", "POLLER_", "NOTIFIER_", "INTAKE_",
                                  "METRICS_"))}
    done = subprocess.run([sys.executable, "-m", f"batchbus.services.{service}"],
                          env={**clean, **env}, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [line]
