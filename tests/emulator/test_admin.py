"""Admin endpoints (`/_emulator/...`), the in-process runner, and `python -m batchbus.emulator`."""

from __future__ import annotations

import json
import os
import re
import selectors
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest

from batchbus.emulator import EmulatorConfig, EmulatorHandle, run_emulator
from batchbus.emulator.prompt import params_hash
from tests.emulator.helpers import AdminError, admin, item, make_client

ROOT = Path(__file__).resolve().parents[2]


def test_config_get_and_partial_put(emu: EmulatorHandle) -> None:
    assert admin(emu, "GET", "/_emulator/config")["processing_seconds"] == 1.0
    updated = admin(emu, "PUT", "/_emulator/config", {"counts_mode": "incremental"})
    assert updated["counts_mode"] == "incremental" and updated["processing_seconds"] == 1.0
    assert emu.state.config.counts_mode == "incremental"


@pytest.mark.parametrize("patch", [{"counts_mode": "sometimes"}, {"no_such_field": 1}])
def test_invalid_config_is_400(emu: EmulatorHandle, patch: dict[str, object]) -> None:
    with pytest.raises(AdminError) as caught:
        admin(emu, "PUT", "/_emulator/config", patch)
    assert caught.value.status == 400


def test_faults_can_be_configured_over_http(
    client: anthropic.Anthropic, emu: EmulatorHandle
) -> None:
    admin(emu, "PUT", "/_emulator/config", {"faults": [{"operation": "list", "status": 500}]})
    with pytest.raises(anthropic.InternalServerError):
        client.messages.batches.list()
    assert client.messages.batches.list().data == []


def test_advance_moves_the_clock(client: anthropic.Anthropic, emu: EmulatorHandle) -> None:
    batch = client.messages.batches.create(requests=[item("a")])
    admin(emu, "POST", "/_emulator/advance", {"seconds": 5})
    assert client.messages.batches.retrieve(batch.id).processing_status == "ended"
    with pytest.raises(AdminError, match="400"):
        admin(emu, "POST", "/_emulator/advance", {"seconds": -1})


def test_creates_log_and_stats(client: anthropic.Anthropic, emu: EmulatorHandle) -> None:
    first = client.messages.batches.create(requests=[item("a"), item("b")])
    second = client.messages.batches.create(
        requests=[{"custom_id": "c", "params": item("a")["params"]}]
    )
    client.messages.batches.retrieve(first.id)
    creates = admin(emu, "GET", "/_emulator/creates")["creates"]
    assert [c["batch_id"] for c in creates] == [first.id, second.id]
    assert [r["custom_id"] for r in creates[0]["requests"]] == ["a", "b"]
    assert creates[1]["requests"][0]["params_hash"] == creates[0]["requests"][0]["params_hash"]
    assert creates[0]["requests"][1]["params_hash"] == params_hash(dict(item("b")["params"]))
    calls = admin(emu, "GET", "/_emulator/stats")["calls"]
    assert (calls["create"], calls["retrieve"], calls["list"]) == (2, 1, 0)


def test_reset_forgets_everything(client: anthropic.Anthropic, emu: EmulatorHandle) -> None:
    client.messages.batches.create(requests=[item("a")])
    admin(emu, "POST", "/_emulator/reset")
    assert client.messages.batches.list().data == []
    assert admin(emu, "GET", "/_emulator/creates")["creates"] == []
    assert admin(emu, "GET", "/_emulator/stats")["calls"]["create"] == 0


def test_run_emulator_context_manager() -> None:
    with run_emulator(EmulatorConfig(processing_seconds=0)) as emu, make_client(emu) as sdk:
        batch = sdk.messages.batches.create(requests=[item("a")])
        assert sdk.messages.batches.retrieve(batch.id).processing_status == "ended"
    with make_client(emu) as sdk, pytest.raises(anthropic.APIConnectionError):
        sdk.messages.batches.list()


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[tuple[str, float, str]]:
    """`python -m batchbus.emulator` on port 0 with flags, env vars and a config file; yields its URL."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"counts_mode": "incremental", "api_keys": ["cli-key"]}))
    env = {**os.environ, "EMULATOR_PORT": "0", "EMULATOR_PROCESSING_SECONDS": "0.7"}
    command = [sys.executable, "-m", "batchbus.emulator", "--host", "127.0.0.1", "--config", str(config)]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        line = _first_line(process, timeout=10)
        match = re.fullmatch(r"emulator listening on (http://127\.0\.0\.1:(\d+))\n", line)
        assert match and match[2] != "0", line
        yield match[1], 0.7, "cli-key"
    finally:
        process.terminate()
        process.wait(timeout=10)
        assert process.stdout is not None
        process.stdout.close()


def _first_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise AssertionError(f"no announcement within {timeout} s")
    return process.stdout.readline()


def test_cli_announces_its_port_and_reads_env_and_config(cli: tuple[str, float, str]) -> None:
    url, processing_seconds, key = cli
    sdk = anthropic.Anthropic(api_key=key, base_url=url, max_retries=0)
    with sdk:
        batch = sdk.messages.batches.create(requests=[item("a")])
        assert batch.results_url is None
    config = admin(url, "GET", "/_emulator/config")
    assert config["processing_seconds"] == processing_seconds
    assert config["counts_mode"] == "incremental"
