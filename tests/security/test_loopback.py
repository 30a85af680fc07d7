"""/metrics, /healthz and /readyz listen on loopback unless METRICS_HOST says otherwise;
docker-compose.yml exposes them on its own network only, and publishes no port beyond
127.0.0.1."""

import socket
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from batchbus.launcher.nats_server import NatsServer
from batchbus.launcher.services import Pipeline
from batchbus.shared.settings import HttpSettings

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.nats


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets listening on `port` (Linux /proc/net/tcp{,6})."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                found.add(_address(address))
    return found


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:  # little-endian IPv4
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def started_intake(nats_server: NatsServer, log_dir: Path, **env: str) -> tuple[Pipeline, int]:
    pipeline = Pipeline({"NATS_URL": nats_server.url, **env}, log_dir)
    service = pipeline.add("intake", "intake")
    service.wait_ready()
    return pipeline, service.port


def test_the_default_is_loopback(nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch,
                                 tmp_path: Path) -> None:
    monkeypatch.delenv("METRICS_HOST", raising=False)
    assert HttpSettings().host == "127.0.0.1"
    pipeline, port = started_intake(nats_server, tmp_path)
    try:
        assert listening_addresses(port) == {"127.0.0.1"}
    finally:
        pipeline.stop()


def test_exposing_is_explicit(nats_server: NatsServer, tmp_path: Path) -> None:
    pipeline, port = started_intake(nats_server, tmp_path, METRICS_HOST="0.0.0.0")
    try:
        assert listening_addresses(port) == {"0.0.0.0"}
    finally:
        pipeline.stop()


def test_compose_exposes_metrics_on_its_network_only() -> None:
    compose = YAML(typ="safe", pure=True).load((ROOT / "docker-compose.yml").read_text())
    assert compose["x-common-env"]["METRICS_HOST"] == "0.0.0.0"
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
