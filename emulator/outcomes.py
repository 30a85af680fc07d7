"""Decides each batch request's outcome at submission: validation, directives, rules, cache.

Order matters (first=n counts and cache writes follow submission order), so planning runs
under the store lock; the expensive, order-free part (`prepare`) runs outside it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from batchbus.emulator.config import OutcomeRule
from batchbus.emulator.directives import (
    Directive,
    Outcome,
    Refusal,
    ResultKind,
    directive_text,
    parse_directive,
    parse_outcome,
)
from batchbus.emulator.errors import default_message
from batchbus.emulator.model_table import ModelIndex
from batchbus.emulator.prompt import (
    CachePrefix,
    CacheTtl,
    cache_prefix,
    canonical_json,
    input_token_estimate,
    sha256_hex,
)
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
    refusal: Refusal | None = None  # succeeded, but the model declined
    # The prompt's size: a directive's, else the estimate made when the request came in (so a
    # batch keeps a number, not its 20 MB documents, until its results are read).
    input_tokens: int | None = None
    output_tokens: int | None = None  # the answer's size set by a directive (else natural)


@dataclass(frozen=True, slots=True)
class Prepared:
    custom_id: str
    params: dict[str, Any]
    params_hash: str
    problem: Plan | None
    directive: Directive | None
    cache: CachePrefix | None
    prompt_tokens: int  # the estimate (0 for a request with a problem: it never runs)


def prepare(
    custom_id: str,
    params: dict[str, Any],
    models: ModelIndex,
    api_version: str,
    betas: Collection[str] = (),
) -> Prepared:
    """Everything about one request that does not depend on what was submitted before."""
    canonical = canonical_json(params)
    digest = sha256_hex(canonical)
    problem: Plan | None = None
    directive: Directive | None = None
    error = params_problem(params, models, api_version, betas)
    if error is not None:
        problem = Plan("errored", error.error_type, error.message)
    elif (text := directive_text(params)) is not None:
        try:
            directive = parse_directive(text)
        except ValueError as exc:
            problem = Plan("errored", "invalid_request_error", f"metadata.user_id: {exc}")
    if problem is not None:
        return Prepared(custom_id, params, digest, problem, None, None, 0)
    cache = cache_prefix(params, canonical)
    tokens = input_token_estimate(params, canonical)
    return Prepared(custom_id, params, digest, None, directive, cache, tokens)


def outcome_plan(outcome: Outcome) -> Plan:
    if outcome.kind != "errored" or outcome.error_type is None:
        return Plan(outcome.kind)
    error_type = outcome.error_type
    worker = error_type not in _CLIENT_ERRORS
    return Plan("errored", error_type, default_message(error_type), worker)


def succeeded_plan(
    cache: CacheUse | None,
    forced: Outcome | None,
    directive: Directive | None,
    prompt_tokens: int,
) -> Plan:
    """A request that runs: maybe refused, its prompt and answer sizes maybe set by its
    directive (the prompt's otherwise `prompt_tokens`, the estimate)."""
    input_tokens = prompt_tokens
    if directive is not None and directive.input_tokens is not None:
        input_tokens = directive.input_tokens
    return Plan(
        "succeeded",
        cache=cache,
        refusal=None if forced is None else forced.refusal,
        input_tokens=input_tokens,
        output_tokens=None if directive is None else directive.output_tokens,
    )


class Planner:
    """Remembers submissions (for `first=n`) and cache prefixes already written."""

    def __init__(self) -> None:
        self.submissions: Counter[str] = Counter()
        self.cache_seen: set[str] = set()

    def plan(self, prepared: Prepared, rules: Sequence[OutcomeRule]) -> Plan:
        if prepared.problem is not None:
            return prepared.problem
        forced = self.forced(prepared.params_hash, self._choice(prepared, rules))
        if forced is not None and forced.kind != "succeeded":
            return outcome_plan(forced)
        cache = self.cache_use(prepared.cache)
        return succeeded_plan(cache, forced, prepared.directive, prepared.prompt_tokens)

    def cache_use(self, prefix: CachePrefix | None) -> CacheUse | None:
        """First sighting of a prefix writes the cache; later ones read it."""
        if prefix is None:
            return None
        write = prefix.key not in self.cache_seen
        self.cache_seen.add(prefix.key)
        return CacheUse(write, prefix.tokens, prefix.ttl)

    def forced(self, params_hash: str, choice: tuple[Outcome, int | None] | None) -> Outcome | None:
        """The chosen outcome, unless `first=n` submissions of these params have had it."""
        if choice is None:
            return None
        outcome, first = choice
        if first is not None:
            self.submissions[params_hash] += 1
            if self.submissions[params_hash] > first:
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
