"""Fixtures with real parts: a nats-server per session, the emulator, the four services."""

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchbus.emulator.config import EmulatorConfig
from batchbus.emulator.server import EmulatorHandle, start_emulator
from batchbus.launcher.nats_server import NatsServer, start_nats
from batchbus.launcher.services import Pipeline

TEST_API_KEY = "sk-ant-test-" + "k" * 24


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A real nats-server with JetStream on a free loopback port (never skipped)."""
    server = start_nats(str(tmp_path_factory.mktemp("nats")))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    handle = start_emulator(EmulatorConfig(processing_seconds=0.5, api_keys={TEST_API_KEY}))
    yield handle
    handle.stop()


def pipeline_env(nats_url: str, emulator_url: str, **extra: str) -> dict[str, str]:
    return {
        "NATS_URL": nats_url,
        "ANTHROPIC_BASE_URL": emulator_url,
        "ANTHROPIC_API_KEY": TEST_API_KEY,
        "BATCHER_MAX_WAIT_SECONDS": "0.5",
        "BATCHER_DOUBT_SETTLE_SECONDS": "0",
        "BATCHER_RETRY_DELAY_SECONDS": "0.2",
        "POLLER_INTERVAL_SECONDS": "0.2",
        "POLLER_MAX_INTERVAL_SECONDS": "1",
        "INTAKE_MAX_TASK_BYTES": str(64 * 1024),
        "NOTIFIER_RETRY_DELAY_SECONDS": "0.2",
        **extra,
    }


@pytest.fixture(scope="module")
def pipeline_overrides() -> dict[str, str]:
    """Environment a test module sets for its services (fault tests shorten timeouts)."""
    return {}


@pytest.fixture(scope="module")
def pipeline(nats_server: NatsServer, emulator: EmulatorHandle, pipeline_overrides: dict[str, str],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """The four services as real processes (`python -m services.<name>`)."""
    log_dir = Path(os.environ.get("BATCHBUS_TEST_LOGS") or tmp_path_factory.mktemp("logs"))
    env = pipeline_env(nats_server.url, emulator.url, **pipeline_overrides)
    running = Pipeline(env, log_dir).start()
    yield running
    running.stop()


@pytest.fixture
def tenant() -> str:
    """A fresh tenant per test, so tests sharing one server never see each other's results."""
    return "t" + uuid.uuid4().hex[:12]
