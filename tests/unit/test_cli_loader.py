"""The JSONL checks of `batchbus submit`: Tasks, bare Messages API bodies, and every bad line
named at once (JSON, intake's validation, the model catalog, ids used twice, sizes: a line
too large for one message goes by reference, only params over 32 MiB are bad)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from batchbus.cli.loader import (
    LoadError,
    by_reference,
    check_lines,
    generated_id,
    intake_checks,
    load_tasks,
    published_size,
    unsendable,
)
from batchbus.shared import subjects
from batchbus.shared.payloads import HEADROOM, MAX_PARAMS_BYTES

BODY = {"model": "claude-sonnet-4-6", "max_tokens": 64,
        "messages": [{"role": "user", "content": "Where is my parcel?"}]}
TASK = {"task_id": "ticket-1", "params": BODY, "metadata": {"ticket": 1}}


def lines(*objs: object) -> list[str]:
    return [o if isinstance(o, str) else json.dumps(o) for o in objs]


def test_task_lines_pass_through_and_bare_bodies_get_ids_and_their_line() -> None:
    checked = check_lines(lines(TASK, "", BODY), "tickets.jsonl")
    assert checked.problems == [] and checked.warnings == []
    tasks = checked.tasks
    assert tasks[0].task_id == "ticket-1" and tasks[0].metadata == {"ticket": 1}
    bare = tasks[1]
    assert bare.params == BODY
    assert bare.metadata == {"source": "tickets.jsonl", "line": 3}  # the blank line counts
    assert bare.task_id.startswith("tickets-000003-") and subjects.is_token(bare.task_id)
    assert [line.number for line in checked.lines] == [1, 3]
    assert checked.lines[0].size == published_size(tasks[0])


def test_generated_ids_are_deterministic_and_tell_files_lines_and_bodies_apart() -> None:
    first = generated_id("tasks.jsonl", 1, BODY)
    assert generated_id("tasks.jsonl", 1, dict(reversed(BODY.items()))) == first  # key order
    assert generated_id("tasks.jsonl", 2, BODY) != first
    assert generated_id("other.jsonl", 1, BODY) != first
    assert generated_id("tasks.jsonl", 1, {**BODY, "max_tokens": 65}) != first


def test_generated_ids_are_valid_tokens_for_any_file_name() -> None:
    for name in ("my tasks (v2).jsonl", "ü.jsonl", "x" * 300 + ".jsonl", ".jsonl"):
        task_id = generated_id(name, 1_234_567, BODY)
        assert subjects.is_token(task_id), task_id


def test_same_file_loaded_twice_gives_the_same_ids(tmp_path: Path) -> None:
    path = tmp_path / "batch.jsonl"
    path.write_text("\n".join(lines(BODY, BODY, TASK)) + "\n")
    first, second = load_tasks(path), load_tasks(path)
    assert [t.task_id for t in first.tasks] == [t.task_id for t in second.tasks]
    assert len({t.task_id for t in first.tasks}) == 3  # equal bodies on two lines are two tasks


@pytest.mark.parametrize(("objs", "message"), [
    (["{not json"], "1: invalid JSON: Expecting property name enclosed in double quotes at "
                    "column 2"),
    (["[1, 2]"], "1: expected a JSON object (a Task or a Messages API body), got array"),
    ([{"model": "m"}], "1: neither a Task (task_id, params) nor a Messages API body"),
    ([TASK, {**TASK, "task_id": "t2", "unknown": 1}], "2: unknown task field(s): unknown"),
    ([{"task_id": "a b", "params": BODY}], "1: task_id is missing or does not match"),
    ([{"params": BODY}], "1: task_id is missing"),
    ([TASK, "", TASK], "3: task_id 'ticket-1' is already used on line 1"),
    ([{**BODY, "max_tokens": 0}], "1: params.max_tokens must be an integer >= 1"),
    ([{**BODY, "messages": []}], "1: params.messages must be a non-empty list"),
    ([{**BODY, "stream": True}], "1: params.stream must be false or absent"),
    # The model catalog: retired, forbidden params, max_tokens per model.
    ([{**BODY, "model": "claude-sonnet-4-5"}], "1: params.model 'claude-sonnet-4-5' was retired"),
    ([{**BODY, "temperature": 0.5}], "1: params.temperature is not accepted by "
                                     "claude-sonnet-4-6"),
    ([{**BODY, "max_tokens": 64_001}], "1: params.max_tokens 64001 is above "
                                       "claude-sonnet-4-6's limit of 64000"),
])
def test_a_bad_line_is_named_as_intake_would_reject_it(objs: list[object], message: str) -> None:
    checked = check_lines(lines(*objs), "f.jsonl")
    assert any(line.startswith(f"f.jsonl:{message}") for line in checked.listing()), \
        checked.listing()


def test_every_bad_line_is_listed_at_once_in_line_order() -> None:
    checked = check_lines(lines(TASK, "{oops", "", [1], {**BODY, "max_tokens": 0},
                                {**TASK, "task_id": "t2"}, TASK), "tasks.jsonl")
    assert [p.line for p in checked.problems] == [2, 4, 5, 7]
    listing = checked.listing()
    assert [line.split(":")[1] for line in listing] == ["2", "4", "5", "7"]
    assert all(line.startswith("tasks.jsonl:") for line in listing)
    assert [line.number for line in checked.lines] == [1, 6]  # the good ones, for a count
    assert checked.count == 6


def test_an_unknown_model_is_a_warning_since_intake_also_asks_the_models_api() -> None:
    checked = check_lines(lines({**BODY, "model": "claude-future-9"}), "f.jsonl")
    assert checked.problems == [] and len(checked.tasks) == 1
    [warning] = checked.warning_listing()
    assert warning.startswith("f.jsonl:1: warning: params.model 'claude-future-9' is not a model")


def test_a_deprecated_model_passes_with_a_warning() -> None:
    checked = check_lines(lines({**BODY, "model": "claude-opus-4-5"}), "f.jsonl")
    assert checked.problems == []
    assert "deprecated" in checked.warning_listing()[0]


def test_an_empty_file_is_a_load_error() -> None:
    with pytest.raises(LoadError, match="no tasks in the file"):
        check_lines(["", "  "], "f.jsonl")


def test_a_line_separator_inside_a_json_string_does_not_split_the_line(tmp_path: Path) -> None:
    path = tmp_path / "u2028.jsonl"
    body = {**BODY, "messages": [{"role": "user", "content": "one\u2028two"}]}
    path.write_text(json.dumps(body, ensure_ascii=False) + "\n", encoding="utf-8")
    (task,) = load_tasks(path).tasks
    assert task.params["messages"][0]["content"] == "one\u2028two"


def test_a_lone_surrogate_is_named_not_a_crash() -> None:
    checked = check_lines([json.dumps({**BODY, "messages": [
        {"role": "user", "content": "\ud800"}]})], "f.jsonl")
    assert "lone UTF-16 surrogate" in checked.listing()[0]


def test_an_unreadable_file_is_a_load_error(tmp_path: Path) -> None:
    path = tmp_path / "binary.jsonl"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(LoadError, match="cannot read"):
        load_tasks(path)


def test_lines_larger_than_max_payload_go_by_reference_and_are_not_bad() -> None:
    big = {**BODY, "messages": [{"role": "user", "content": "x" * 5000}]}
    checked = check_lines(lines(TASK, BODY, big), "tasks.jsonl")
    assert checked.problems == []
    size = checked.lines[2].size
    # Headroom is kept for headers: a task closer than that to max_payload goes apart.
    assert by_reference(checked, size + HEADROOM) == 0
    assert by_reference(checked, size + HEADROOM - 1) == 1
    assert unsendable(checked, size + HEADROOM - 1, "NATS at nats://h:4222") == []


def test_params_over_32_mib_are_a_bad_line_without_asking_the_server() -> None:
    huge = {**BODY, "messages": [{"role": "user", "content": "x" * MAX_PARAMS_BYTES}]}
    checked = check_lines(lines(TASK, huge, BODY), "tasks.jsonl")
    assert [line.number for line in checked.lines] == [1, 3]
    [line] = checked.listing()
    assert line.startswith("tasks.jsonl:2: its params are 33,554,")
    assert f"over the Messages API's request size limit of {MAX_PARAMS_BYTES:,} bytes" in line


def test_a_line_too_large_even_by_reference_names_the_server() -> None:
    heavy = {**TASK, "task_id": "ticket-2", "metadata": {"notes": "n" * 5000}}
    checked = check_lines(lines(TASK, heavy), "tasks.jsonl")
    [problem] = unsendable(checked, 4000 + HEADROOM, "NATS at nats://h:4222")
    [line] = checked.listing([problem])
    assert line.startswith("tasks.jsonl:2: the task is ")
    assert "even with its params stored apart" in line and "shorten its metadata" in line
    assert line.endswith("(NATS at nats://h:4222)")


def test_intake_checks_import_without_the_services_dependencies() -> None:
    """The base install (nats-py, pydantic, typer, rich) runs these checks: importing the CLI
    and checking a line pulls in none of the services' packages."""
    heavy = ("faststream", "anthropic", "httpx2", "prometheus_client", "uvicorn", "starlette")
    probe = ("import json, sys\n"
             "from batchbus.cli.main import app\n"
             "from batchbus.cli.loader import check_lines, intake_checks\n"
             "assert intake_checks() is not None\n"
             "check_lines(['{\"model\": \"claude-sonnet-4-5\", \"max_tokens\": 1, "
             "\"messages\": [1]}'], 'f.jsonl')\n"
             f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
    assert intake_checks() is not None
