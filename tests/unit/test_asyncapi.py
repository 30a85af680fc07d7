"""docs/asyncapi.json is what faststream generates from the contract in shared/asyncapi.py."""

import json
import os
import subprocess
import sys
from pathlib import Path

from batchbus.shared import asyncapi, subjects
from batchbus.shared.models import Result, Task

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.json"


def test_the_committed_document_matches_the_code() -> None:
    committed = DOCUMENT.read_text()
    assert committed == asyncapi.document(), "docs/asyncapi.json is stale: run `make asyncapi`"


def test_the_document_is_stable_across_processes() -> None:
    # faststream keeps publishers in a set: another hash seed must give the same text.
    command = [sys.executable, "-m", "batchbus.shared.asyncapi", "--check", "--out", str(DOCUMENT)]
    run = subprocess.run(command,
                         capture_output=True, text=True, timeout=60, check=False,
                         env={**os.environ, "PYTHONHASHSEED": "1"})
    assert run.returncode == 0, run.stderr


def test_the_document_covers_the_public_subjects_and_their_models() -> None:
    doc = json.loads(DOCUMENT.read_text())
    assert doc["asyncapi"].startswith("3.")
    addresses = {c["address"]: name for name, c in doc["channels"].items()}
    assert set(addresses) >= {subjects.tasks("{tenant}"), subjects.results("{tenant}", "{task_id}"),
                              subjects.batch_events("{batch_id}"), subjects.cancel("{tenant}")}
    actions = {name: op["action"] for name, op in doc["operations"].items()}
    assert actions[addresses[subjects.tasks("{tenant}")]] == "receive"
    assert actions[addresses[subjects.results("{tenant}", "{task_id}")]] == "send"
    schemas = doc["components"]["schemas"]
    assert set(schemas["Task"]["properties"]) == set(Task.model_fields)
    assert set(schemas["Result"]["properties"]) == set(Result.model_fields)
