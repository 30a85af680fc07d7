"""TLS between the services and NATS, with a CA, server and client certificates made by the
test: the pipeline runs over TLS, and a client without TLS or without its certificate is
refused."""

import asyncio
import json
import os
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import nats
import nats.errors
import pytest

from batchbus.client import BatchbusClient
from batchbus.emulator.server import EmulatorHandle
from batchbus.launcher.nats_server import NatsServer, start_nats
from batchbus.launcher.services import Pipeline
from batchbus.shared.settings import NatsSettings
from tests.conftest import pipeline_env
from tests.integration.helpers import ticket
from tests.security.certificates import Certificates, make_certificates

pytestmark = [pytest.mark.nats, pytest.mark.slow]


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_nats(certificates: Certificates, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[NatsServer]:
    """nats-server requiring TLS from every client and verifying client certificates."""
    directory = tmp_path_factory.mktemp("tls-nats")
    config = directory / "server.conf"
    config.write_text(f"""tls {{
  cert_file: "{certificates.server_cert}"
  key_file: "{certificates.server_key}"
  ca_file: "{certificates.ca}"
  verify: true
}}
""")
    server = start_nats(str(directory / "store"), config=str(config))
    yield server
    server.stop()


def tls_settings(certificates: Certificates) -> NatsSettings:
    return NatsSettings(tls_ca=str(certificates.ca), tls_cert=str(certificates.client_cert),
                        tls_key=str(certificates.client_key))


@pytest.fixture(scope="module")
def tls_pipeline(tls_nats: NatsServer, emulator: EmulatorHandle, certificates: Certificates,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    log_dir = Path(os.environ.get("BATCHBUS_TEST_LOGS") or tmp_path_factory.mktemp("logs"))
    env = pipeline_env(tls_nats.url, emulator.url, NATS_TLS_CA=str(certificates.ca),
                       NATS_TLS_CERT=str(certificates.client_cert),
                       NATS_TLS_KEY=str(certificates.client_key))
    pipeline = Pipeline(env, log_dir)
    try:
        yield pipeline.start()
    finally:
        pipeline.stop()


async def test_the_pipeline_runs_over_tls(tls_pipeline: Pipeline, tls_nats: NatsServer,
                                          certificates: Certificates) -> None:
    async with BatchbusClient(tls_nats.url, "acme",
                              nats_settings=tls_settings(certificates)) as client:
        # The server takes no plaintext client (the next test), so this runs over TLS.
        result = await asyncio.wait_for(client.submit(ticket(1)), 60)
    assert result.status == "succeeded"


def plaintext_reply(url: str) -> tuple[dict[str, object], bytes]:
    """Talks the NATS protocol without TLS: the server's INFO, then its answer to CONNECT."""
    host, _, port = url.removeprefix("nats://").rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        info = sock.recv(4096)
        sock.sendall(b'CONNECT {"verbose":false,"tls_required":false}\r\nPING\r\n')
        answer = b""
        try:
            while chunk := sock.recv(4096):
                answer += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    return json.loads(info.removeprefix(b"INFO ").strip()), answer


async def test_a_client_without_tls_is_refused(tls_nats: NatsServer,
                                               certificates: Certificates) -> None:
    info, answer = await asyncio.to_thread(plaintext_reply, tls_nats.url)
    assert info["tls_required"] is True
    assert b"PONG" not in answer  # the server never served the plaintext client

    with pytest.raises((ssl.SSLError, nats.errors.Error, OSError)):
        # nats-py upgrades to TLS with the system's CAs, which do not know the test CA.
        await nats.connect(tls_nats.url, allow_reconnect=False, max_reconnect_attempts=1,
                           connect_timeout=3)


async def test_a_client_without_its_certificate_is_refused(tls_nats: NatsServer,
                                                           certificates: Certificates) -> None:
    only_ca = NatsSettings(tls_ca=str(certificates.ca))
    with pytest.raises((ssl.SSLError, nats.errors.Error, OSError)):
        async with BatchbusClient(tls_nats.url, "acme", nats_settings=only_ca,
                                  allow_reconnect=False, max_reconnect_attempts=1,
                                  connect_timeout=3):
            pass
