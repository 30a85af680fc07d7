"""Counts that agree, against real NATS, the services and the emulator (issue 15, item 9):
a task rejected and then sent again is one task in `results`, and `cost` says how many
stored results its table leaves out."""

import asyncio
import json
import re
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner
from typer.testing import Result as Invocation

from batchbus.cli.main import app
from batchbus.cli.tally import USD_PLACES
from batchbus.client import BatchbusClient
from batchbus.launcher.nats_server import NatsServer
from batchbus.launcher.services import Pipeline
from batchbus.shared.models import Result
from tests.integration.helpers import ticket

pytestmark = pytest.mark.nats

runner = CliRunner()


def batchbus(url: str, *argv: str) -> Invocation:
    return runner.invoke(app, [*argv, "--nats", url])


def rejected_then_resent(url: str, tenant: str, tmp_path: Path) -> Result:
    """ticket-00001 is rejected (max_tokens 0 passes the client, not intake), then sent
    again, fixed, with `batchbus submit --follow`."""
    async def reject() -> Result:
        async with BatchbusClient(url, tenant) as client:
            return await asyncio.wait_for(client.submit(ticket(1, max_tokens=0)), 60)

    first = asyncio.run(reject())
    assert first.status == "rejected"
    fixed = tmp_path / "fixed.jsonl"
    fixed.write_text(json.dumps(ticket(1)) + "\n" + json.dumps(ticket(2)) + "\n")
    done = batchbus(url, "submit", str(fixed), "--tenant", tenant, "--follow")
    assert done.exit_code == 0, done.output
    assert "by status      succeeded 2" in done.stdout
    return first


def test_a_rejected_then_resent_task_is_one_task_and_the_cost_counts_agree(
        pipeline: Pipeline, nats_server: NatsServer, tenant: str, tmp_path: Path) -> None:
    url = nats_server.url
    rejected_then_resent(url, tenant, tmp_path)

    table = batchbus(url, "results", "--tenant", tenant)
    assert table.exit_code == 0, table.output
    assert table.stdout.count("ticket-00001") == 1
    assert table.stdout.splitlines()[0].startswith("2 results (1 superseded not shown")
    assert "rejected" not in table.stdout.split("\n", 1)[1]

    kept = batchbus(url, "results", "--tenant", tenant, "--out", "-")
    rows = [json.loads(line) for line in kept.stdout.splitlines()]
    assert sorted((r["task_id"], r["status"]) for r in rows) == \
        [("ticket-00001", "succeeded"), ("ticket-00002", "succeeded")]
    every = batchbus(url, "results", "--tenant", tenant, "--all", "--out", "-")
    assert [json.loads(line)["status"] for line in every.stdout.splitlines()].count(
        "rejected") == 1
    out = tmp_path / "results.jsonl"
    written = batchbus(url, "results", "--tenant", tenant, "--out", str(out))
    assert "wrote 2 results" in written.stderr and "1 superseded" in written.stderr

    as_json = batchbus(url, "cost", "--tenant", tenant, "--json")
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.stdout)
    assert (report["results"], report["ran_results"], report["not_ran_by_status"]) == \
        (3, 2, {"rejected": 1})
    assert report["total"]["results"] == report["ran_results"]
    # Every amount in one format: USD_PLACES decimals, no exponent.
    amounts = [c[k] for c in [report["total"], *report["models"].values()]
               for k in ("batch_usd", "realtime_usd", "saved_usd")]
    assert all(re.fullmatch(rf"\d+\.\d{{{USD_PLACES}}}", a) for a in amounts), amounts
    assert Decimal(report["total"]["batch_usd"]) > 0

    shown = batchbus(url, "cost", "--tenant", tenant, "--since", "1d")
    assert shown.exit_code == 0, shown.output
    assert f"cost of 2 results that ran, tenant {tenant}" in shown.stdout
    assert "3 results stored: 2 ran (above), 1 did not and cost nothing — rejected 1" \
        in shown.stdout
