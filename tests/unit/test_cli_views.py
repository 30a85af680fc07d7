"""What `results`, `cost` and `status` print, from given results and records: counts that
agree, one row per task, delivered batches not in flight, texts cut between words."""

import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from rich.table import Table

from batchbus.cli.commands import cost, results, status
from batchbus.cli.commands.submit import print_summary
from batchbus.cli.tally import Tally, finals
from batchbus.shared.models import BatchRecord, Cost, ErrorInfo, Result, Usage
from batchbus.shared.text import clip

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
JSON_ERROR = ("task is not valid JSON: Expecting property name enclosed in double quotes: "
              "line 1 column 2 (char 1)")


def render(*items: Any) -> str:
    out = io.StringIO()
    console = Console(file=out, width=240, highlight=False, soft_wrap=True)
    for item in items:
        console.print(item)
    return out.getvalue()


def ran(task_id: str, model: str = "claude-sonnet-4-6", tenant: str = "acme") -> Result:
    return Result(task_id=task_id, tenant=tenant, status="succeeded",
                  message={"model": model, "content": []},
                  usage=Usage(input_tokens=10, output_tokens=5),
                  cost=Cost(batch_usd=0.1, realtime_usd=0.2, saved_usd=0.1))


def rejected(task_id: str, message: str = JSON_ERROR) -> Result:
    return Result(task_id=task_id, tenant="acme", status="rejected",
                  error=ErrorInfo(type="malformed_json", message=message))


@pytest.mark.parametrize(("text", "width", "expected"), [
    ("short", 10, "short"),
    ("one two three four", 12, "one two…"),
    ("one two three four", 14, "one two three…"),
    ("one two three", 13, "one two three"),
    ("abcdefghij", 5, "abcd…"),  # one word longer than the width: nothing else to cut at
    ("a, b, c, d", 6, "a, b…"),  # no dangling comma before the ellipsis
    ("line one\nline two", 40, "line one line two"),
])
def test_clip_cuts_between_words(text: str, width: int, expected: str) -> None:
    assert clip(text, width) == expected
    assert len(clip(text, width)) <= width


def test_clip_never_ends_inside_a_word_of_a_long_error() -> None:
    clipped = clip(JSON_ERROR, 80)
    assert clipped.endswith("…") and "double quo…" not in clipped
    assert JSON_ERROR.startswith(clipped[:-1])
    assert JSON_ERROR[len(clipped) - 1] == " "  # the cut falls on a space


def test_results_table_shows_the_latest_final_result_of_a_resent_task() -> None:
    stored = [rejected("t1"), ran("t2"), ran("t1")]
    text = render(results.table(stored, finals(stored)))
    assert text.count("t1") == 1
    assert text.splitlines()[0].startswith("2 results (1 superseded not shown")
    every = render(results.table(stored, finals(stored), every=True))
    assert every.count("t1") == 2 and "rejected (superseded)" in every
    assert every.splitlines()[0] == \
        "3 results (1 superseded: rejections of a task that has another final result)"


def test_results_table_cuts_details_between_words() -> None:
    stored = [rejected("t1")]
    row = next(line for line in render(results.table(stored, finals(stored))).splitlines()
               if "t1" in line)
    assert "double quo…" not in row and "Expecting property name enclosed in…" in row, row


def test_cost_header_counts_what_the_table_sums_and_notes_the_rest() -> None:
    tally = Tally()
    for r in [ran("a"), ran("b"), ran("c", model="claude-haiku-4-5"), rejected("d"),
              rejected("e"), Result(task_id="f", tenant="acme", status="errored",
                                    error=ErrorInfo(type="invalid_request_error", message="x"))]:
        tally.add(r)
    text = render(cost.table(tally, None), *cost.notes(tally))
    assert "cost of 3 results that ran, all tenants" in text
    total = next(line for line in text.splitlines() if "total" in line)
    assert re.search(r"│ total +│ 3 +│", total), total  # the header's count is the total row's
    assert "6 results stored: 3 ran (above), 3 did not and cost nothing — errored 1, " \
           "rejected 2" in text
    report = cost.report(tally, None, "1d")
    assert report["results"] == 6 and report["ran_results"] == report["total"]["results"] == 3
    assert report["results"] == report["ran_results"] + sum(report["not_ran_by_status"].values())
    assert report["total"]["batch_usd"] == "0.3000000000"


def record(state: str, minutes: int, **fields: Any) -> BatchRecord:
    return BatchRecord(intent_id=f"i-{state}", state=state, requests=4, bytes=100,  # type: ignore[arg-type]
                       intent_at=NOW - timedelta(minutes=minutes),
                       batch_id=None if state == "intent" else f"msgbatch_{state}", **fields)


def test_status_does_not_count_a_delivered_batch_as_in_flight() -> None:
    found = status.Status([record("submitted", 3), record("ended", 2, lines_done=1),
                           record("delivered", 1)], status.Queues(0, 0, 0), NOW)
    assert [r.state for r in found.in_flight] == ["submitted", "ended"]
    assert [r.state for r in found.delivered] == ["delivered"]
    as_json = found.as_json()
    assert as_json["counts"] == {"in_flight": 2, "delivered": 1}
    assert [b["in_flight"] for b in as_json["batches"]] == [True, True, False]
    text = render(status.table(found, found.in_flight, "2 batches in flight"))
    assert "msgbatch_delivered" not in text and "1/4" in text


def test_submit_summary_cuts_reasons_between_words() -> None:
    tally = Tally()
    tally.add(rejected("t1", "word " * 40))
    text = render_summary(tally)
    line = next(line for line in text.splitlines() if "t1" in line)
    assert line.endswith("word…")


def render_summary(tally: Tally) -> str:
    out = io.StringIO()
    print_summary(Console(file=out, width=240, highlight=False, soft_wrap=True), "acme",
                  Path("tasks.jsonl"), tally)
    return out.getvalue()


def test_tables_are_rich_tables() -> None:  # the commands print these objects as they are
    stored = [ran("a")]
    assert isinstance(results.table(stored, finals(stored)), Table)
