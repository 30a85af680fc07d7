"""`batchbus` refuses bad input with one clear line and exit code 2, before touching NATS."""

from pathlib import Path

from typer.testing import CliRunner

from batchbus.cli.main import app

runner = CliRunner()
NOWHERE = "nats://127.0.0.1:1"  # never reached: each error comes first


def test_a_malformed_file_is_named_by_line_and_nothing_is_published(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text('{"model": "m", "messages": []}\n{"oops": 1}\n')
    done = runner.invoke(app, ["submit", str(path), "--tenant", "acme", "--nats", NOWHERE])
    assert done.exit_code == 2
    assert "tasks.jsonl: line 2: neither a Task" in done.stderr
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


def test_help_explains_how_generated_ids_deduplicate() -> None:
    done = runner.invoke(app, ["submit", "--help"])
    assert done.exit_code == 0
    assert "deduplicated by batchbus rather than paid for twice" in " ".join(done.output.split())
