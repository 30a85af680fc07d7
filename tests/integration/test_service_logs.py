"""A service's log, written to a file, is plain text: no terminal colour codes."""

from pathlib import Path

import pytest

from batchbus.emulator.server import EmulatorHandle
from batchbus.launcher.nats_server import NatsServer
from batchbus.launcher.services import Service, free_port
from tests.conftest import pipeline_env

pytestmark = pytest.mark.nats


def test_a_service_log_file_has_no_colour_codes(nats_server: NatsServer, emulator: EmulatorHandle,
                                                 tmp_path: Path) -> None:
    log = tmp_path / "poller.log"
    service = Service("poller", free_port(), pipeline_env(nats_server.url, emulator.url), log)
    service.start()
    try:
        service.wait_ready()
    finally:
        service.stop()
    text = log.read_text()
    assert "FastStream app started" in text  # the lifecycle lines are there, through our logging
    assert "\x1b[" not in text
