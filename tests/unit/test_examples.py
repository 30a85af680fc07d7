"""The sample tasks file a newcomer submits first: every line passes intake as it stands."""

from pathlib import Path

from batchbus.services.intake.model_rules import Allowed, check_models
from batchbus.services.intake.validation import Limits, validate_task
from batchbus.shared.catalog import default_catalog
from batchbus.shared.models import Task

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "tasks.jsonl"


def test_every_sample_task_is_accepted_by_intake() -> None:
    limits = Limits(allowed_models=None, max_tokens=None, max_task_bytes=1 << 20)
    lines = EXAMPLES.read_bytes().splitlines()
    assert len(lines) >= 10
    ids = set()
    for line in lines:
        task = validate_task(line, limits)
        assert isinstance(task, Task), task
        assert check_models(task, default_catalog()) == Allowed(), task.task_id
        ids.add(task.task_id)
    assert len(ids) == len(lines)
