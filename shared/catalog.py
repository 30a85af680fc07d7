"""The model catalog: lifecycle, output limits, request rules, betas and prices per model.

The data file (shared/data/models.json) holds what the Models API does not say — prices,
request rules, betas — and a first guess at what it does. `Catalog.with_models_api` lays the
API's answer over the file: its lifecycle, retirement date and max_tokens win, a model the
file lists but the API does not is `unlisted`, and a model only the API lists is kept
without a price (its cost is unknown, never guessed).
"""

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any, Literal, Protocol

# `legacy` is the docs' word for an older model still served: the Models API says `active`.
Lifecycle = Literal["active", "legacy", "deprecated", "retired", "unlisted"]
RATE_NAMES = ("input", "cache_write_5m", "cache_write_1h", "cache_read", "output")


@dataclass(frozen=True)
class Band:
    """Every rate of a request whose prompt is above `above_prompt_tokens` is multiplied."""

    above_prompt_tokens: int
    multiplier: Decimal


@dataclass(frozen=True)
class Rule:
    """A request rule of a group of models (or of the API version the SDK sends)."""

    name: str
    why: str
    forbidden_params: tuple[str, ...] = ()
    prefill: bool = True  # may the last message be the assistant's
    thinking: frozenset[str] | None = None  # allowed `thinking.type`s; None: any


@dataclass(frozen=True)
class Beta:
    name: str
    about: str
    max_tokens: int | None = None  # the output limit it raises max_tokens to
    models: frozenset[str] | None = None  # the models it raises the limit on; None: any
    batch_only: bool = False  # the Messages API refuses it: never sent real-time


@dataclass(frozen=True)
class ModelSpec:
    id: str
    lifecycle: Lifecycle
    max_tokens: int | None
    rates: Mapping[str, Decimal] | None  # None: no known price
    bands: tuple[Band, ...] = ()
    rules: tuple[Rule, ...] = ()
    retires_at: date | None = None
    replacement: str | None = None
    source: Literal["file", "api", "file+api"] = "file"


class ApiModel(Protocol):
    """What the catalog reads of the SDK's `ModelInfo`."""

    @property
    def id(self) -> str: ...
    @property
    def lifecycle(self) -> str: ...
    @property
    def retires_at(self) -> datetime | None: ...
    @property
    def max_tokens(self) -> int | None: ...


@dataclass(frozen=True)
class Catalog:
    models: Mapping[str, ModelSpec]
    aliases: Mapping[str, str]  # dated id -> the catalog's id
    betas: Mapping[str, Beta]
    batch_discount: Decimal
    us_only_multiplier: Decimal
    checked: date  # when the file's rows were last checked against the docs
    # Filled by with_models_api: models the API lists that the file lacks.
    api_only: frozenset[str] = field(default_factory=frozenset)

    def spec(self, model: str) -> ModelSpec | None:
        return self.models.get(self.aliases.get(model, model))

    def output_limit(self, spec: ModelSpec, betas: Iterable[str] = ()) -> int | None:
        """The largest max_tokens a request to `spec` may ask for with these betas."""
        limit = spec.max_tokens
        for name in betas:
            beta = self.betas.get(name)
            if beta and beta.max_tokens and (beta.models is None or spec.id in beta.models):
                limit = max(limit or 0, beta.max_tokens)
        return limit

    def with_models_api(self, listed: Iterable[ApiModel]) -> "Catalog":
        """The catalog as the Models API says it is now (`listed`: every lifecycle)."""
        models: dict[str, ModelSpec] = {
            name: replace(spec, lifecycle="unlisted") for name, spec in self.models.items()}
        api_only = set()
        for info in listed:
            name = self.aliases.get(info.id, info.id)
            known = self.models.get(name)
            lifecycle = _lifecycle(info.lifecycle, known)
            retires = info.retires_at.date() if info.retires_at else None
            if known is None:
                api_only.add(name)
                models[name] = ModelSpec(name, lifecycle, info.max_tokens, None,
                                         retires_at=retires, source="api")
            else:
                models[name] = replace(known, lifecycle=lifecycle,
                                       max_tokens=info.max_tokens or known.max_tokens,
                                       retires_at=retires or known.retires_at, source="file+api")
        return replace(self, models=models, api_only=frozenset(api_only))


def _lifecycle(reported: str, known: ModelSpec | None) -> Lifecycle:
    if reported == "active" and known is not None and known.lifecycle == "legacy":
        return "legacy"
    if reported in ("active", "deprecated", "retired"):
        return reported  # type: ignore[return-value]
    return "active"  # a stage added after this code: served, as far as we can tell


def load_catalog(text: str) -> Catalog:
    raw = json.loads(text)
    rules = {name: _rule(name, row) for name, row in raw["rules"].items()}
    default_rules = tuple(rules[name] for name in raw.get("default_rules", ()))
    models: dict[str, ModelSpec] = {}
    aliases: dict[str, str] = {}
    for name, row in raw["models"].items():
        prices = row.get("prices")
        models[name] = ModelSpec(
            id=name, lifecycle=row["lifecycle"], max_tokens=row.get("max_tokens"),
            rates=None if prices is None else {k: Decimal(prices[k]) for k in RATE_NAMES},
            bands=tuple(Band(b["above_prompt_tokens"], Decimal(b["multiplier"]))
                        for b in row.get("bands", ())),
            # The model's own rules first: their reasons are the more telling.
            rules=tuple(rules[r] for r in row.get("rules", ())) + default_rules,
            retires_at=date.fromisoformat(row["retires_at"]) if row.get("retires_at") else None,
            replacement=row.get("replacement"))
        aliases.update(dict.fromkeys(row.get("aliases", ()), name))
    betas = {name: Beta(name, row.get("about", ""), row.get("max_tokens"),
                        frozenset(row["models"]) if "models" in row else None,
                        row.get("batch_only", False))
             for name, row in raw["betas"].items()}
    return Catalog(models=models, aliases=aliases, betas=betas,
                   batch_discount=Decimal(raw["batch_discount"]),
                   us_only_multiplier=Decimal(raw["us_only_multiplier"]),
                   checked=date.fromisoformat(raw["checked"]))


def _rule(name: str, row: dict[str, Any]) -> Rule:
    thinking = row.get("thinking")
    return Rule(name=name, why=row["why"], forbidden_params=tuple(row.get("forbidden_params", ())),
                prefill=row.get("prefill", True),
                thinking=None if thinking is None else frozenset(thinking))


@cache
def default_catalog() -> Catalog:
    """The catalog of the data file shipped with batchbus."""
    return load_catalog(
        resources.files("batchbus.shared").joinpath("data/models.json").read_text())
