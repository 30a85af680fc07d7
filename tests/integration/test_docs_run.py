"""Docs that run: every Python block of README.md and docs/*.md, as pasted, against live
services (NATS_URL set, as after `batchbus up`). Taken from the Markdown itself, so the docs
and this test cannot drift apart."""

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import nats
import pytest

from batchbus.launcher.nats_server import NatsServer
from batchbus.launcher.services import Pipeline
from batchbus.shared.models import Result

pytestmark = pytest.mark.nats

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.M | re.S)


def python_blocks() -> list[tuple[str, str]]:
    found = []
    for path in DOCUMENTS:
        text = path.read_text()
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{path.relative_to(ROOT)}:{line}", match[1]))
    return found


BLOCKS = python_blocks()


def test_the_docs_have_python_blocks() -> None:
    assert len(BLOCKS) >= 5  # the extraction itself works


@pytest.fixture(scope="module")
def acme_rejected_before(pipeline: Pipeline, nats_server: NatsServer) -> None:
    """A stored rejection in the snippets' tenant: a snippet that printed the first stored
    result instead of its own task's would print it."""
    async def reject() -> None:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        sub = await js.subscribe("batchbus.results.acme.>", ordered_consumer=True)
        await js.publish("batchbus.tasks.acme", b"{not json")
        async with asyncio.timeout(60):
            while Result.model_validate_json((await sub.next_msg(timeout=60)).data).status \
                    != "rejected":
                pass
        await nc.close()

    asyncio.run(reject())


@pytest.mark.parametrize("code", [code for _, code in BLOCKS], ids=[where for where, _ in BLOCKS])
def test_a_python_block_runs_as_pasted(acme_rejected_before: None, nats_server: NatsServer,
                                       code: str) -> None:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=180, env=os.environ | {"NATS_URL": nats_server.url},
                          cwd=ROOT / "tests")  # not the repository root: only the install
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    if "print(" in code:  # what it prints is the result of the tasks it sent
        printed = done.stdout.split()
        assert "succeeded" in printed, done.stdout
        if ".results(" not in code and ".history(" not in code:  # they replay the stored ones
            assert not {"rejected", "errored", "expired"} & set(printed), done.stdout


def readme_commands(prefix: str) -> list[str]:
    """The README's shell lines that start with `prefix` (comments cut off)."""
    text = (ROOT / "README.md").read_text()
    return [line.split("  #")[0].strip()
            for block in re.findall(r"^```sh\n(.*?)^```$", text, re.M | re.S)
            for line in block.splitlines() if line.startswith(prefix)]


def test_the_quick_start_submits_the_sample_tasks(acme_rejected_before: None,
                                                  nats_server: NatsServer) -> None:
    commands = readme_commands(".venv/bin/batchbus ")
    assert any(" submit examples/tasks.jsonl" in c for c in commands)
    for command in commands:
        if command.split()[1] == "up":
            continue  # the test's own services stand in for it
        argv = [sys.executable, "-m", "batchbus.cli", *command.split()[1:]]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=180, cwd=ROOT,
                              env=os.environ | {"NATS_URL": nats_server.url})
        assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])
        assert "Traceback" not in done.stderr
