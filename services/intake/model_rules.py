"""Fail fast: what the API would certainly refuse about a task's model, betas and params.

A batch reports a bad request only when the whole batch ends, up to 24 hours later; these
checks answer at once, from the model catalog (the data file as the Models API last said).
"""

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from batchbus.services.intake.validation import Rejection, short
from batchbus.shared.catalog import Catalog, ModelSpec
from batchbus.shared.models import Task


@dataclass(frozen=True)
class Allowed:
    warnings: tuple[str, ...] = ()


def check_models(task: Task, catalog: Catalog) -> Rejection | Allowed:
    """The task's model (and fallback model) against the catalog, its betas and its params."""
    betas = task.betas
    broken = _check_betas(betas, catalog, task.route)
    warnings: list[str] = []
    models = [("params.model", str(task.params["model"]))]
    if task.fallback_model is not None:
        models.append(("fallback_model", task.fallback_model))
    for where, model in models:
        if broken is not None:
            break
        outcome = _check_model(where, model, task.params, betas, catalog)
        if isinstance(outcome, Rejection):
            broken = outcome
        else:
            warnings.extend(outcome.warnings)
    if broken is not None:
        return replace(broken, task_id=task.task_id, webhook=task.webhook)
    return Allowed(tuple(warnings))


def _check_betas(betas: Sequence[str], catalog: Catalog, route: str) -> Rejection | None:
    unknown = [b for b in betas if b not in catalog.betas]
    if unknown:
        return Rejection("unknown_beta", f"unknown beta(s) {', '.join(unknown)[:200]}: the API "
                      "would refuse the whole batch; known: " + ", ".join(sorted(catalog.betas)))
    batch_only = [b for b in betas if catalog.betas[b].batch_only]
    if batch_only and route == "realtime":
        return Rejection("batch_only_beta", f"beta {batch_only[0]} exists only on the Message "
                      'Batches API: drop route "realtime"')
    return None


def _check_model(where: str, model: str, params: dict[str, Any], betas: Sequence[str],
                 catalog: Catalog) -> Rejection | Allowed:
    shown = short(model)
    spec = catalog.spec(model)
    if spec is None:
        return Rejection("unknown_model", f"{where} {shown!r} is not a model the API serves"
                      f"{_instead(catalog)}")
    if spec.lifecycle == "retired":
        since = f" on {spec.retires_at}" if spec.retires_at else ""
        return Rejection("retired_model", f"{where} {shown!r} was retired{since}: the API "
                      f"answers not_found_error{_use(spec)}")
    if spec.lifecycle == "unlisted":
        return Rejection("unlisted_model", f"{where} {shown!r} is not listed by the Models API "
                      f"for this API key{_instead(catalog)}")
    broken = _check_rules(spec, params) or _check_max_tokens(
        spec, int(params["max_tokens"]), betas, catalog)
    if broken is not None:
        return broken
    if spec.lifecycle == "deprecated":
        retires = f"retires on {spec.retires_at}" if spec.retires_at else "is to be retired"
        return Allowed((f"{spec.id} is deprecated and {retires}{_use(spec)}",))
    return Allowed()


def _check_rules(spec: ModelSpec, params: dict[str, Any]) -> Rejection | None:
    for rule in spec.rules:
        for name in rule.forbidden_params:
            if name in params:
                return Rejection("forbidden_param", f"params.{name} is not accepted by "
                              f"{spec.id} ({rule.why}); remove it")
        messages = params["messages"]
        if not rule.prefill and isinstance(messages[-1], dict) \
                and messages[-1].get("role") == "assistant":
            return Rejection("prefill_not_supported", f"{spec.id} takes no assistant prefill "
                          f"({rule.why}): the last message must be the user's")
        thinking = params.get("thinking")
        kind = thinking.get("type") if isinstance(thinking, dict) else None
        if rule.thinking is not None and kind is not None and kind not in rule.thinking:
            return Rejection("thinking_not_supported", f"params.thinking.type {short(kind)!r} "
                          f"is not accepted by {spec.id} ({rule.why}); use "
                          + " or ".join(repr(t) for t in sorted(rule.thinking)))
    return None


def _check_max_tokens(spec: ModelSpec, asked: int, betas: Sequence[str],
                      catalog: Catalog) -> Rejection | None:
    limit = catalog.output_limit(spec, betas)
    if limit is None or asked <= limit:
        return None
    raising = [b for b in catalog.betas.values() if b.max_tokens and b.max_tokens > limit
               and (b.models is None or spec.id in b.models) and b.name not in betas]
    hint = f"; the {raising[0].name} beta raises it to {raising[0].max_tokens}" if raising else ""
    return Rejection("max_tokens_too_large", f"params.max_tokens {asked} is above {spec.id}'s "
                  f"limit of {limit}{hint}")


def _use(spec: ModelSpec) -> str:
    return f"; use {spec.replacement}" if spec.replacement else ""


def _instead(catalog: Catalog) -> str:
    served = sorted(m.id for m in catalog.models.values() if m.lifecycle == "active")
    return f"; current models: {', '.join(served)}" if served else ""
