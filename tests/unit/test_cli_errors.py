"""`batchbus` refuses bad input with clear lines and exit code 2, and every connection error
names the server it tried and why that one (nothing here reaches a NATS server)."""

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from batchbus.cli import connection, state
from batchbus.cli.main import app

runner = CliRunner()
NOWHERE = "nats://127.0.0.1:1"  # refuses at once
ELSEWHERE = "nats://127.0.0.1:2"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No NATS_URL, an empty state folder of our own, and a default that refuses at once
    (never the server a developer runs on 4222)."""
    monkeypatch.delenv("NATS_URL", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setattr(connection, "DEFAULT_NATS_URL", NOWHERE)
    return tmp_path / "run" / "batchbus"


def test_every_bad_line_is_listed_and_nothing_is_published(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text('{"model": "m", "messages": []}\n{"oops": 1}\n\n{"task_id": "a b"}\n[]\n')
    done = runner.invoke(app, ["submit", str(path), "--tenant", "acme", "--nats", NOWHERE])
    assert done.exit_code == 2
    lines = done.stderr.splitlines()
    assert [line.split(": ", 1)[0] for line in lines[:-1]] == \
        [f"{path}:1", f"{path}:2", f"{path}:4", f"{path}:5"]
    assert lines[1] == (f"{path}:2: neither a Task (task_id, params) nor a Messages API body "
                        "(model, messages)")
    # The summary says nothing went out, and that sizes could not be checked, and why.
    assert lines[-1].startswith(f"error: {path}: 4 of 4 lines are bad; nothing was published "
                                f"(line sizes were not checked: cannot reach NATS at {NOWHERE}")
    assert "Traceback" not in done.output


def test_a_bad_tenant_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text('{"model": "m", "messages": []}\n')
    for argv in (["submit", str(path)], ["results"], ["cost"]):
        done = runner.invoke(app, [*argv, "--tenant", "a.b", "--nats", NOWHERE])
        assert done.exit_code == 2 and "--tenant must match" in done.stderr, argv


def test_a_bad_since_is_a_usage_error() -> None:
    done = runner.invoke(app, ["results", "--tenant", "acme", "--since", "yesterday",
                               "--nats", NOWHERE])
    assert done.exit_code == 2 and "not a duration such as 30m" in done.output


def test_up_without_the_emulator_needs_an_api_key() -> None:
    done = runner.invoke(app, ["up", "--no-emulator"], env={"ANTHROPIC_API_KEY": ""})
    assert done.exit_code == 2 and "needs ANTHROPIC_API_KEY" in done.stderr


def help_of(*argv: str) -> str:
    done = runner.invoke(app, [*argv, "--help"])
    assert done.exit_code == 0
    return " ".join(done.output.replace("│", " ").split())


def test_submit_help_says_what_is_sent_again() -> None:
    text = help_of("submit")
    assert "deduplicated by batchbus rather than paid for twice" in text
    assert "every bad line is listed (FILE:LINE: reason) and nothing is published" in text
    # Not "tasks with a result are not sent again": rejected ones are.
    assert "a task whose earlier copy was rejected is published again" in text


def test_up_and_env_help_name_the_state_file() -> None:
    for command in ("up", "env"):
        assert "up-<pid>.json in $XDG_RUNTIME_DIR/batchbus/" in help_of(command), command
    assert "recorded, see `batchbus env`" in help_of("status")  # --nats says the default


def test_without_nats_url_or_up_the_error_names_the_default_and_why(isolated: Path) -> None:
    done = runner.invoke(app, ["status"])
    assert done.exit_code == 2
    [line] = done.stderr.splitlines()
    assert line.startswith(f"error: cannot reach NATS at {NOWHERE} (")
    # Nothing runs: here `batchbus up` is the precise advice.
    assert (f"NATS_URL is not set and no `batchbus up` is running (none recorded in "
            f"{isolated}): start one with `batchbus up`") in line


def test_a_given_server_that_does_not_answer_is_named_without_blaming_batchbus_up() -> None:
    done = runner.invoke(app, ["status"], env={"NATS_URL": NOWHERE})
    [line] = done.stderr.splitlines()
    assert done.exit_code == 2
    assert line.startswith(f"error: cannot reach NATS at {NOWHERE} (")
    assert "which NATS_URL names it; is that server running?" in line
    assert "batchbus up" not in line
    flag = runner.invoke(app, ["status", "--nats", NOWHERE])
    assert "which --nats names it" in flag.stderr


def record_up(nats_url: str, pid: int | None = None) -> Path:
    return state.write(state.UpRecord(pid or os.getpid(), nats_url, "ready"))


def test_a_running_up_is_used_without_nats_url_and_named_when_it_fails(isolated: Path) -> None:
    path = record_up(ELSEWHERE)  # this test's own process: alive
    done = runner.invoke(app, ["status"])
    [line] = done.stderr.splitlines()
    assert done.exit_code == 2
    assert line.startswith(f"error: cannot reach NATS at {ELSEWHERE} (")
    assert f"the server `batchbus up` (pid {os.getpid()}) recorded in {path}" in line
    assert "start one with `batchbus up`" not in line  # it runs: that is not the problem


def test_a_given_server_names_the_running_up_as_the_likely_fix() -> None:
    record_up(ELSEWHERE)
    done = runner.invoke(app, ["status"], env={"NATS_URL": NOWHERE})
    assert done.exit_code == 2
    assert (f"`batchbus up` (pid {os.getpid()}) runs NATS at {ELSEWHERE}: unset NATS_URL or "
            f"pass --nats {ELSEWHERE}") in done.stderr


def test_the_record_of_a_dead_up_is_ignored_and_removed(isolated: Path) -> None:
    dead = record_up(ELSEWHERE, pid=2 ** 22 + 12345)  # above Linux's pid_max: never alive
    done = runner.invoke(app, ["status"])
    assert f"cannot reach NATS at {NOWHERE}" in done.stderr  # the default, not the record
    assert not dead.exists()


def test_env_prints_the_export_line_of_the_running_up() -> None:
    state.write(state.UpRecord(os.getpid(), "nats://127.0.0.1:4567", "ready",
                               "http://127.0.0.1:8901"))
    done = runner.invoke(app, ["env"])
    assert done.exit_code == 0
    assert done.stdout.splitlines() == [
        f"# batchbus up (pid {os.getpid()}), Batch API emulator at http://127.0.0.1:8901",
        "export NATS_URL=nats://127.0.0.1:4567"]


def test_env_without_a_running_up_says_so(isolated: Path) -> None:
    done = runner.invoke(app, ["env"])
    assert done.exit_code == 2 and done.stdout == ""
    assert f"no `batchbus up` is running (none recorded in {isolated})" in done.stderr


def test_state_files_are_private_and_hold_json(isolated: Path) -> None:
    path = record_up(ELSEWHERE)
    assert path == isolated / f"up-{os.getpid()}.json"
    assert path.stat().st_mode & 0o777 == 0o600 and isolated.stat().st_mode & 0o777 == 0o700
    assert json.loads(path.read_text())["nats_url"] == ELSEWHERE


def test_a_starting_up_that_does_not_answer_yet_says_so() -> None:
    state.write(state.UpRecord(os.getpid(), ELSEWHERE, "starting"))
    done = runner.invoke(app, ["status"])
    assert done.exit_code == 2
    assert f"`batchbus up` (pid {os.getpid()}, still starting)" in done.stderr
    assert "try again once it prints `batchbus is up`" in done.stderr
