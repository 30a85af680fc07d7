"""A tenant may not create its own payload bucket (accounts.conf): before an operator has run
`batchbus payloads init <tenant>`, its first large task fails with one line naming that
command, and nothing is published; after, the same task goes."""

import asyncio
import os
import subprocess
import sys

import nats
import pytest

from batchbus.client import BatchbusClient
from batchbus.shared import streams, subjects
from batchbus.shared.payloads import PayloadBucketMissing
from batchbus.shared.settings import NatsSettings
from tests.integration.helpers import ticket
from tests.security.conftest import SecuredNats

pytestmark = [pytest.mark.nats]


def large_task() -> dict[str, object]:
    return ticket(1, system="x" * (1 << 20))  # over the server's 1 MB max_payload


async def tasks_stored(secured: SecuredNats) -> int:
    """Tasks in the tasks stream, which intake creates (as it does at start) if missing."""
    nc = await nats.connect(secured.url, user="intake", password=secured.passwords["intake"])
    try:
        await streams.ensure_streams(nc.jetstream(), NatsSettings())
        return (await nc.jetstream().stream_info(subjects.STREAM_TASKS)).state.messages
    finally:
        await nc.close()


async def test_a_tenants_bucket_is_made_by_an_operator_not_by_the_tenant(
        secured_nats: SecuredNats) -> None:
    acme = NatsSettings(user="acme", password=secured_nats.passwords["acme"])
    before = await tasks_stored(secured_nats)
    async with BatchbusClient(secured_nats.url, "acme", nats_settings=acme) as client:
        with pytest.raises(PayloadBucketMissing) as missing:
            await client.publish(large_task())
    message = str(missing.value)
    assert "\n" not in message and "batchbus payloads init acme" in message
    assert await tasks_stored(secured_nats) == before

    made = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "batchbus.cli", "payloads", "init", "acme", "--nats",
         secured_nats.url], capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "NATS_USER": "intake",
             "NATS_PASSWORD": secured_nats.passwords["intake"]})
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == "payloads_acme: ready"

    async with BatchbusClient(secured_nats.url, "acme", nats_settings=acme) as client:
        await client.publish(large_task())
    assert await tasks_stored(secured_nats) == before + 1
