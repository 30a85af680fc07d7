"""Reads and checks the JSONL file of `batchbus submit`: one Task per line, or a bare
Messages API body that gets a task id made from the file name, the line number and the body.

Every line is checked before anything is published, and every bad line is reported, not
only the first: JSON, the Task as intake would check it (intake's own validation, and the
model catalog's rules), ids used twice, params over the Messages API's 32 MiB, and — once
connected — a task too large for the server even with its params stored apart. A line too
large for one message is fine: the client stores its params in the tenant's payload bucket
and sends the task by reference (docs/payloads.md).
"""

import functools
import hashlib
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from batchbus.outgoing import TaskTooLarge, encode, outgoing, params_too_large
from batchbus.shared import subjects
from batchbus.shared.models import Task
from batchbus.shared.payloads import fits

STEM_CHARS = 36  # leaves room for "-<line>-<digest>" within the 64-character id limit
DIGEST_CHARS = 12


class LoadError(ValueError):
    """The file as a whole cannot be submitted (unreadable, or no task in it)."""


@dataclass(frozen=True)
class Problem:
    line: int
    message: str


@dataclass(frozen=True)
class Line:
    """A good line: its task and its size as published."""

    number: int
    task: Task
    size: int


@dataclass
class Checked:
    """What checking a file found: its good lines, its bad ones, and warnings that do not
    stop the submit (a deprecated model, say)."""

    label: str  # the file as the user named it, for `tasks.jsonl:3: ...`
    lines: list[Line] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def tasks(self) -> list[Task]:
        return [line.task for line in self.lines]

    @property
    def count(self) -> int:
        """Non-blank lines: good and bad."""
        return len(self.lines) + len({p.line for p in self.problems})

    def listing(self, problems: list[Problem] | None = None) -> list[str]:
        """`tasks.jsonl:3: reason`, one per problem, in line order."""
        found = self.problems if problems is None else problems
        return [f"{self.label}:{p.line}: {p.message}" for p in sorted(found, key=lambda p: p.line)]

    def warning_listing(self) -> list[str]:
        return [f"{self.label}:{p.line}: warning: {p.message}" for p in self.warnings]


def generated_id(file_name: str, line: int, body: dict[str, Any]) -> str:
    """`<file stem>-<line>-<digest of the body>`.

    The same file submitted again gives the same ids, so batchbus deduplicates the tasks
    instead of paying for them twice. The digest keeps two different files that share a
    name (two `tasks.jsonl` in different folders) from claiming each other's ids, and gives
    an edited line a new id, since it is a new request.
    """
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(file_name).stem).strip("-")[:STEM_CHARS]
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # surrogatepass: a lone surrogate escape still gets an id, so the check can name it.
    data = canonical.encode("utf-8", "surrogatepass")
    digest = hashlib.blake2b(data, digest_size=8).hexdigest()[:DIGEST_CHARS]
    return f"{stem or 'tasks'}-{line:06d}-{digest}"


def is_bare_body(obj: dict[str, Any]) -> bool:
    """A Messages API request body rather than a Task: `model` and `messages` at the top."""
    return "model" in obj and "messages" in obj and "params" not in obj and "task_id" not in obj


# What intake would say about a task message: the Task, or why it rejects it; warnings.
Verdict = tuple[Task | str, list[str]]


@functools.cache
def intake_checks() -> Callable[[bytes], Verdict] | None:
    """Intake's own validation and the model catalog's checks, when they import without the
    services' dependencies (they are pure); None otherwise, and pydantic's Task check only."""
    try:
        from batchbus.services.intake.model_rules import check_models
        from batchbus.services.intake.validation import Limits, Rejection, validate_task
        from batchbus.shared.catalog import default_catalog
    except ImportError:
        return None
    # The deployment's own limits (allowed models, INTAKE_MAX_TOKENS, INTAKE_MAX_TASK_BYTES)
    # are intake's to apply; sizes are checked apart (params_too_large, unsendable).
    limits = Limits(allowed_models=None, max_tokens=None, max_task_bytes=sys.maxsize)
    catalog = default_catalog()

    def check(data: bytes) -> Verdict:
        outcome = validate_task(data, limits)
        if isinstance(outcome, Rejection):
            return outcome.message, []
        ruled = check_models(outcome, catalog)
        if not isinstance(ruled, Rejection):
            return outcome, list(ruled.warnings)
        if ruled.reason == "unknown_model":
            # The data file may predate a new model; intake asks the Models API too.
            return outcome, [f"{ruled.message} (per batchbus's model catalog; intake also asks "
                             "the Models API, and rejects it if that does not know it either)"]
        return ruled.message, []

    return check


def _pydantic_check(raw: dict[str, Any]) -> Verdict:
    try:
        task = Task.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'task'}: {e['msg']}"
                             for e in exc.errors()[:3])
        return f"not a valid Task ({problems})", []
    if not subjects.is_token(task.task_id):
        return f"task_id {task.task_id!r} must match {subjects.TOKEN_PATTERN}", []
    return task, []


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
            float: "number"}.get(type(value), "null")


def check_line(text: str, file_name: str, number: int) -> Verdict:
    """One non-blank line: its Task, or why it is bad (a sentence)."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"invalid JSON: {exc.msg} at column {exc.colno}", []
    except RecursionError:
        return "invalid JSON: nested too deeply", []
    if not isinstance(obj, dict):
        return f"expected a JSON object (a Task or a Messages API body), got {_kind(obj)}", []
    if is_bare_body(obj):
        raw = {"task_id": generated_id(file_name, number, obj), "params": obj,
               "metadata": {"source": Path(file_name).name, "line": number}}
        # ASCII escapes keep a lone surrogate encodable, for intake's check to name it.
        data = json.dumps(raw).encode()
    elif "params" not in obj and "task_id" not in obj:
        return ("neither a Task (task_id, params) nor a Messages API body (model, "
                "messages)"), []
    else:
        raw, data = obj, text.encode()
    check = intake_checks()
    return check(data) if check is not None else _pydantic_check(raw)


def published_size(task: Task) -> int:
    """The payload `BatchbusClient.publish` sends for `task` when it goes inline."""
    return len(encode(task))


def check_lines(lines: list[str], label: str, file_name: str | None = None) -> Checked:
    """Every line checked (1-based, as editors count; blank lines are skipped but
    counted); `label` names the file in messages, `file_name` makes generated ids."""
    name = file_name or Path(label).name
    checked = Checked(label)
    first_seen: dict[str, int] = {}
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        outcome, warnings = check_line(text, name, number)
        checked.warnings.extend(Problem(number, w) for w in warnings)
        if isinstance(outcome, str):
            checked.problems.append(Problem(number, outcome))
            continue
        if outcome.task_id in first_seen:
            checked.problems.append(Problem(number, (
                f"task_id {outcome.task_id!r} is already used on line "
                f"{first_seen[outcome.task_id]}; batchbus would drop the second one")))
            continue
        first_seen[outcome.task_id] = number
        size = published_size(outcome)
        too_large = params_too_large(outcome, size)
        if too_large is not None:
            checked.problems.append(Problem(number, too_large))
            continue
        checked.lines.append(Line(number, outcome, size))
    if not checked.lines and not checked.problems:
        raise LoadError(f"{label}: no tasks in the file")
    return checked


def load_tasks(path: Path) -> Checked:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LoadError(f"cannot read {path}: {exc}") from exc
    # Not splitlines(): it also splits at U+2028, which JSON strings may hold unescaped.
    return check_lines(text.split("\n"), str(path))


def by_reference(checked: Checked, max_payload: int) -> int:
    """How many good lines are too large for one message: their params go to the bucket."""
    return sum(1 for line in checked.lines
               if line.task.params_object is None and not fits(line.size, max_payload))


def unsendable(checked: Checked, max_payload: int, server: str) -> list[Problem]:
    """The good lines too large for the server (its max_payload, from its INFO) even with
    their params stored apart: their metadata alone fills a message."""
    problems = []
    for line in checked.lines:
        if fits(line.size, max_payload):
            continue
        try:
            outgoing(line.task, max_payload)
        except TaskTooLarge as exc:
            problems.append(Problem(line.number, f"{exc.reason} ({server})"))
    return problems
