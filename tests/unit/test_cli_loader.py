"""The JSONL loader of `batchbus submit`: Tasks, bare Messages API bodies, and clear errors."""

import json
from pathlib import Path

import pytest

from batchbus.cli.loader import LoadError, generated_id, load_tasks, parse_lines
from batchbus.shared import subjects

BODY = {"model": "claude-sonnet-4-6", "max_tokens": 64,
        "messages": [{"role": "user", "content": "Where is my parcel?"}]}
TASK = {"task_id": "ticket-1", "params": BODY, "metadata": {"ticket": 1}}


def lines(*objs: object) -> list[str]:
    return [o if isinstance(o, str) else json.dumps(o) for o in objs]


def test_task_lines_pass_through_and_bare_bodies_get_ids_and_their_line() -> None:
    tasks = parse_lines(lines(TASK, "", BODY), "tickets.jsonl")
    assert tasks[0].task_id == "ticket-1" and tasks[0].metadata == {"ticket": 1}
    bare = tasks[1]
    assert bare.params == BODY
    assert bare.metadata == {"source": "tickets.jsonl", "line": 3}  # the blank line counts
    assert bare.task_id.startswith("tickets-000003-") and subjects.is_token(bare.task_id)


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
    assert [t.task_id for t in first] == [t.task_id for t in second]
    assert len({t.task_id for t in first}) == 3  # equal bodies on two lines are two tasks


@pytest.mark.parametrize(("objs", "message"), [
    (["{not json"], "line 1: invalid JSON"),
    (["[1, 2]"], "line 1: expected a JSON object"),
    ([{"model": "m"}], "line 1: neither a Task"),
    ([TASK, {**TASK, "unknown": 1}], "line 2: not a valid Task (unknown: Extra inputs"),
    ([{"task_id": "a b", "params": BODY}], "line 1: task_id 'a b' must match"),
    ([{"params": BODY}], "line 1: not a valid Task (task_id: Field required"),
    ([TASK, "", TASK], "line 3: task_id 'ticket-1' is already used on line 1"),
    (["", "  "], "no tasks in the file"),
])
def test_a_bad_line_is_named_and_nothing_is_loaded(objs: list[object], message: str) -> None:
    with pytest.raises(LoadError) as raised:
        parse_lines(lines(*objs), "f.jsonl")
    assert message in str(raised.value)


def test_a_line_separator_inside_a_json_string_does_not_split_the_line(tmp_path: Path) -> None:
    path = tmp_path / "u2028.jsonl"
    body = {**BODY, "messages": [{"role": "user", "content": "one\u2028two"}]}
    path.write_text(json.dumps(body, ensure_ascii=False) + "\n", encoding="utf-8")
    (task,) = load_tasks(path)
    assert task.params["messages"][0]["content"] == "one\u2028two"


def test_an_unreadable_file_is_a_load_error(tmp_path: Path) -> None:
    path = tmp_path / "binary.jsonl"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(LoadError, match="cannot read"):
        load_tasks(path)
