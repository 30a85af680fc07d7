"""Intake's fail-fast checks of a task's model, betas and params against the model catalog,
and the catalog as the Models API reports it."""

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from anthropic.types import ModelInfo

from batchbus.services.intake.model_rules import Allowed, check_models
from batchbus.services.intake.validation import Rejection
from batchbus.shared.catalog import Catalog, default_catalog
from batchbus.shared.models import Task

CATALOG = default_catalog()
BETA_300K = "output-300k-2026-03-24"


def task(model: str = "claude-sonnet-5-5", max_tokens: int = 100, **fields: Any) -> Task:
    params = {"model": model, "max_tokens": max_tokens,
              "messages": [{"role": "user", "content": "hi"}]}
    params |= fields.pop("params", {})
    return Task(task_id="t1", params=params, **fields)


def rejected(outcome: Rejection | Allowed, reason: str, *words: str) -> None:
    assert isinstance(outcome, Rejection), outcome
    assert outcome.reason == reason and outcome.task_id == "t1"
    for word in words:
        assert word in outcome.message, outcome.message


@pytest.mark.parametrize("model", ["claude-sonnet-5-5", "claude-haiku-5-5", "claude-sonnet-4-6",
                                   "claude-haiku-4-5-20251001", "claude-fable-5-2"])
def test_current_models_pass_without_warnings(model: str) -> None:
    assert check_models(task(model), CATALOG) == Allowed()


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "claude-sonnet-4-5-20250929"])
def test_a_retired_model_is_rejected_with_its_date_and_replacement(model: str) -> None:
    rejected(check_models(task(model), CATALOG), "retired_model", model, "retired on 2026-11-30",
             "not_found_error", "use claude-sonnet-5-5")


def test_an_unknown_model_is_rejected_naming_current_ones() -> None:
    rejected(check_models(task("claude-imaginary-9"), CATALOG), "unknown_model",
             "'claude-imaginary-9'", "current models:", "claude-sonnet-5-5")


def test_a_deprecated_model_is_accepted_with_a_warning() -> None:
    outcome = check_models(task("claude-opus-4-5"), CATALOG)
    assert outcome == Allowed(("claude-opus-4-5 is deprecated and retires on 2027-01-22; "
                               "use claude-opus-5-5",))


@pytest.mark.parametrize("param", ["temperature", "top_p", "top_k"])
@pytest.mark.parametrize("model, why", [("claude-opus-5-5", "Claude 5 models"),
                                        ("claude-sonnet-4-6", "API version 2026-10-21")])
def test_sampling_parameters_are_rejected(param: str, model: str, why: str) -> None:
    rejected(check_models(task(model, params={param: 0.5}), CATALOG), "forbidden_param",
             f"params.{param}", model, why)


def test_claude_5_takes_no_prefill_and_only_adaptive_thinking() -> None:
    prefill = {"messages": [{"role": "user", "content": "hi"},
                            {"role": "assistant", "content": "{"}]}
    rejected(check_models(task("claude-haiku-5-5", params=prefill), CATALOG),
             "prefill_not_supported", "claude-haiku-5-5")
    assert check_models(task("claude-sonnet-4-6", params=prefill), CATALOG) == Allowed()
    manual = {"thinking": {"type": "enabled", "budget_tokens": 2000}}
    rejected(check_models(task("claude-opus-5-5", params=manual), CATALOG),
             "thinking_not_supported", "'enabled'", "'adaptive'")
    assert check_models(task("claude-sonnet-4-6", params=manual), CATALOG) == Allowed()
    adaptive = {"thinking": {"type": "adaptive"}}
    assert check_models(task("claude-opus-5-5", params=adaptive), CATALOG) == Allowed()


def test_max_tokens_limit_depends_on_model_and_betas() -> None:
    rejected(check_models(task("claude-sonnet-5-5", 200_000), CATALOG), "max_tokens_too_large",
             "200000", "limit of 128000", f"the {BETA_300K} beta raises it to 300000")
    assert check_models(task("claude-sonnet-5-5", 300_000, betas=[BETA_300K]), CATALOG) == Allowed()
    rejected(check_models(task("claude-sonnet-5-5", 300_001, betas=[BETA_300K]), CATALOG),
             "max_tokens_too_large", "limit of 300000")
    # The beta does not raise the limit of a model it does not cover, and no hint is given.
    outcome = check_models(task("claude-sonnet-4-6", 100_000, betas=[BETA_300K]), CATALOG)
    rejected(outcome, "max_tokens_too_large", "limit of 64000")
    assert isinstance(outcome, Rejection) and "beta" not in outcome.message


def test_unknown_and_batch_only_betas() -> None:
    rejected(check_models(task(betas=["made-up-2030-01-01"]), CATALOG), "unknown_beta",
             "made-up-2030-01-01", BETA_300K)
    rejected(check_models(task(betas=[BETA_300K], route="realtime"), CATALOG),
             "batch_only_beta", BETA_300K)
    assert check_models(task(betas=[BETA_300K], route="auto"), CATALOG) == Allowed()


def test_the_fallback_model_is_checked_like_the_model() -> None:
    rejected(check_models(task(fallback_model="claude-sonnet-4-5"), CATALOG), "retired_model",
             "fallback_model 'claude-sonnet-4-5'")
    rejected(check_models(task("claude-sonnet-4-6", params={"temperature": 1},
                               fallback_model="claude-opus-5-5"), CATALOG), "forbidden_param")
    assert check_models(task("claude-opus-5-5", fallback_model="claude-opus-4-5"), CATALOG) \
        == Allowed(("claude-opus-4-5 is deprecated and retires on 2027-01-22; "
                    "use claude-opus-5-5",))


def info(id: str, lifecycle: str = "active", max_tokens: int | None = None,
         retires_at: datetime | None = None) -> ModelInfo:
    """A Models API record, as the SDK builds it from the API's JSON."""
    return ModelInfo.model_validate({
        "id": id, "type": "model", "display_name": id, "created_at": "2026-01-01T00:00:00Z",
        "lifecycle": lifecycle, "max_tokens": max_tokens,
        "retires_at": retires_at.isoformat() if retires_at else None})


def live(*listed: ModelInfo) -> Catalog:
    return CATALOG.with_models_api(listed)


def test_the_models_api_overrides_lifecycle_and_limits() -> None:
    retired_since = datetime(2026, 12, 5, tzinfo=UTC)
    catalog = live(info("claude-sonnet-5-5", max_tokens=150_000),
                   info("claude-sonnet-4-6", "retired", retires_at=retired_since),
                   info("claude-haiku-4-5-20251001"), info("claude-opus-4-5", "deprecated"))
    assert check_models(task("claude-sonnet-5-5", 150_000), catalog) == Allowed()
    rejected(check_models(task("claude-sonnet-4-6"), catalog), "retired_model",
             "retired on 2026-12-05")
    assert catalog.models["claude-haiku-4-5"].lifecycle == "legacy"  # the API says active
    assert catalog.models["claude-opus-4-5"].retires_at is not None  # kept from the file
    # A model the file knows but the API does not list is not sent.
    rejected(check_models(task("claude-haiku-5-5"), catalog), "unlisted_model",
             "not listed by the Models API")


def test_a_model_only_the_api_lists_is_accepted_without_a_price() -> None:
    catalog = live(info("claude-sonnet-6", max_tokens=64_000))
    assert catalog.api_only == frozenset({"claude-sonnet-6"})
    assert check_models(task("claude-sonnet-6"), catalog) == Allowed()
    spec = catalog.spec("claude-sonnet-6")
    assert spec is not None and spec.rates is None and spec.rules == ()
    rejected(check_models(task("claude-sonnet-6", 64_001), catalog), "max_tokens_too_large")


def test_the_tasks_shown_in_docs_models_md_are_accepted() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "models.md").read_text()
    shown = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.S)]
    assert len(shown) == 2
    for raw in shown:
        assert check_models(Task.model_validate(raw), CATALOG) == Allowed()
