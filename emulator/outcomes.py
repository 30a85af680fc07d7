"""Decides each batch request's outcome at submission: validation, directives, rules, cache.

Order matters (first=n counts and cache writes follow submission order), so planning runs
under the store lock; the expensive, order-free part (`prepare`) runs outside it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from batchbus.emulator.config import OutcomeRule
from batchbus.emulator.directives import (
    Directive,
    Outcome,
    ResultKind,
    directive_text,
    parse_directive,
    parse_outcome,
)
from batchbus.emulator.errors import default_message
from batchbus.emulator.prompt import CachePrefix, CacheTtl, cache_prefix, canonical_json, sha256_hex
from batchbus.emulator.validation import params_problem

# Errors that mean "your request is wrong": reported with request_id null, like validation.
_CLIENT_ERRORS = frozenset(
    {
        "invalid_request_error",
        "not_found_error",
        "permission_error",
        "authentication_error",
        "billing_error",
    }
)


@dataclass(frozen=True, slots=True)
class CacheUse:
    write: bool
    tokens: int
    ttl: CacheTtl


@dataclass(frozen=True, slots=True)
class Plan:
    kind: ResultKind
    error_type: str | None = None
    message: str | None = None
    worker: bool = False  # failed during execution: request_id is workerreq_…, not null
    cache: CacheUse | None = None


SUCCEEDED = Plan("succeeded")


@dataclass(frozen=True, slots=True)
class Prepared:
    custom_id: str
    params: dict[str, Any]
    params_hash: str
    problem: Plan | None
    directive: Directive | None
    cache: CachePrefix | None


def prepare(
    custom_id: str, params: dict[str, Any], models: dict[str, int], api_version: str
) -> Prepared:
    """Everything about one request that does not depend on what was submitted before."""
    canonical = canonical_json(params)
    problem: Plan | None = None
    directive: Directive | None = None
    error = params_problem(params, models, api_version)
    if error is not None:
        problem = Plan("errored", error.error_type, error.message)
    elif (text := directive_text(params)) is not None:
        try:
            directive = parse_directive(text)
        except ValueError as exc:
            problem = Plan("errored", "invalid_request_error", f"metadata.user_id: {exc}")
    cache = cache_prefix(params, canonical) if problem is None else None
    return Prepared(custom_id, params, sha256_hex(canonical), problem, directive, cache)


def outcome_plan(outcome: Outcome) -> Plan:
    if outcome.kind != "errored" or outcome.error_type is None:
        return Plan(outcome.kind)
    error_type = outcome.error_type
    worker = error_type not in _CLIENT_ERRORS
    return Plan("errored", error_type, default_message(error_type), worker)


class Planner:
    """Remembers submissions (for `first=n`) and cache prefixes already written."""

    def __init__(self) -> None:
        self.submissions: Counter[str] = Counter()
        self.cache_seen: set[str] = set()

    def plan(self, prepared: Prepared, rules: Sequence[OutcomeRule]) -> Plan:
        if prepared.problem is not None:
            return prepared.problem
        forced = self._forced(prepared, rules)
        if forced is not None and forced.kind != "succeeded":
            return outcome_plan(forced)
        cache = self.cache_use(prepared.cache)
        return SUCCEEDED if cache is None else Plan("succeeded", cache=cache)

    def cache_use(self, prefix: CachePrefix | None) -> CacheUse | None:
        """First sighting of a prefix writes the cache; later ones read it."""
        if prefix is None:
            return None
        write = prefix.key not in self.cache_seen
        self.cache_seen.add(prefix.key)
        return CacheUse(write, prefix.tokens, prefix.ttl)

    def _forced(self, prepared: Prepared, rules: Sequence[OutcomeRule]) -> Outcome | None:
        choice = self._choice(prepared, rules)
        if choice is None:
            return None
        outcome, first = choice
        if first is not None:
            self.submissions[prepared.params_hash] += 1
            if self.submissions[prepared.params_hash] > first:
                return None
        return outcome

    @staticmethod
    def _choice(
        prepared: Prepared, rules: Sequence[OutcomeRule]
    ) -> tuple[Outcome, int | None] | None:
        if prepared.directive is not None:
            return prepared.directive.outcome, prepared.directive.first
        for rule in rules:
            if re.search(rule.custom_id_regex, prepared.custom_id):
                return parse_outcome(rule.outcome), rule.first
        return None
