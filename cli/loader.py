"""Reads the JSONL file of `batchbus submit`: one Task per line, or a bare Messages API body
that gets a task id made from the file name, the line number and the body."""

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from batchbus.shared import subjects
from batchbus.shared.models import Task

STEM_CHARS = 36  # leaves room for "-<line>-<digest>" within the 64-character id limit
DIGEST_CHARS = 12


class LoadError(ValueError):
    """A line that is neither a Task nor a Messages API body; nothing is published."""


def generated_id(file_name: str, line: int, body: dict[str, Any]) -> str:
    """`<file stem>-<line>-<digest of the body>`.

    The same file submitted again gives the same ids, so batchbus deduplicates the tasks
    instead of paying for them twice. The digest keeps two different files that share a
    name (two `tasks.jsonl` in different folders) from claiming each other's ids, and gives
    an edited line a new id, since it is a new request.
    """
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(file_name).stem).strip("-")[:STEM_CHARS]
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.blake2b(canonical.encode(), digest_size=8).hexdigest()[:DIGEST_CHARS]
    return f"{stem or 'tasks'}-{line:06d}-{digest}"


def is_bare_body(obj: dict[str, Any]) -> bool:
    """A Messages API request body rather than a Task: `model` and `messages` at the top."""
    return "model" in obj and "messages" in obj and "params" not in obj and "task_id" not in obj


def task_from_line(obj: Any, file_name: str, line: int) -> Task:
    if not isinstance(obj, dict):
        raise LoadError(f"line {line}: expected a JSON object, got {type(obj).__name__}")
    if is_bare_body(obj):
        return Task(task_id=generated_id(file_name, line, obj), params=obj,
                    metadata={"source": Path(file_name).name, "line": line})
    if "params" not in obj and "task_id" not in obj:
        raise LoadError(f"line {line}: neither a Task (task_id, params) nor a Messages API "
                        "body (model, messages)")
    try:
        task = Task.model_validate(obj)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'task'}: {e['msg']}"
                             for e in exc.errors()[:3])
        raise LoadError(f"line {line}: not a valid Task ({problems})") from None
    if not subjects.is_token(task.task_id):
        raise LoadError(f"line {line}: task_id {task.task_id[:80]!r} must match "
                        f"{subjects.TOKEN_PATTERN}")
    return task


def parse_lines(lines: list[str], file_name: str) -> list[Task]:
    """Every task of the file, or LoadError naming the first bad line (1-based, as editors
    count; blank lines are skipped but counted)."""
    tasks: list[Task] = []
    first_seen: dict[str, int] = {}
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LoadError(f"line {number}: invalid JSON ({exc.msg} at column {exc.colno})") \
                from None
        task = task_from_line(obj, file_name, number)
        if task.task_id in first_seen:
            raise LoadError(f"line {number}: task_id {task.task_id!r} is already used on line "
                            f"{first_seen[task.task_id]}; batchbus would drop the second one")
        first_seen[task.task_id] = number
        tasks.append(task)
    if not tasks:
        raise LoadError("no tasks in the file")
    return tasks


def load_tasks(path: Path) -> list[Task]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LoadError(f"cannot read {path}: {exc}") from exc
    try:
        # Not splitlines(): it also splits at U+2028, which JSON strings may hold unescaped.
        return parse_lines(text.split("\n"), path.name)
    except LoadError as exc:
        raise LoadError(f"{path}: {exc}") from None
