"""The emulator's whole mutable state and the batch operations on it (HTTP-free)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from batchbus.emulator import ids
from batchbus.emulator.clock import Clock
from batchbus.emulator.config import EmulatedModel, EmulatorConfig
from batchbus.emulator.directives import Directive, Outcome, directive_text, parse_directive
from batchbus.emulator.errors import invalid_request, not_found
from batchbus.emulator.faults import FaultBook
from batchbus.emulator.lifecycle import Batch, batch_json
from batchbus.emulator.model_table import model_index
from batchbus.emulator.outcomes import Planner, prepare, succeeded_plan
from batchbus.emulator.prompt import cache_prefix, canonical_json, input_token_estimate, sha256_hex
from batchbus.emulator.replies import reply_message, reply_params
from batchbus.emulator.results import result_chunks
from batchbus.emulator.store import Store
from batchbus.emulator.validation import (
    check_message_betas,
    check_params,
    parse_create_body,
    parse_json,
)

OPERATIONS = ("create", "retrieve", "list", "cancel", "delete", "results", "messages", "models")


class EmulatorState:
    """Config, clock, batches, planner, fault counters and call statistics."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.initial_config = config or EmulatorConfig()
        self.config = self.initial_config.model_copy(deep=True)
        self.clock = Clock(self.config.time_scale)
        self._fresh()

    def _fresh(self) -> None:
        self.store = Store()
        self.planner = Planner()
        self.faults = FaultBook()
        self.calls: Counter[str] = Counter()
        self.message_log: list[dict[str, str]] = []  # one entry per message answered

    def now(self) -> float:
        return self.clock.now(self.config.time_scale)

    def stamp(self) -> float:
        """Now, on the microsecond grid, so derived times (+24 h, +29 d) format exactly."""
        return round(self.now(), 6)

    def advance(self, seconds: float) -> float:
        self.clock.now(self.config.time_scale)  # apply a pending scale change first
        return self.clock.advance(seconds)

    def configure(self, patch: dict[str, Any]) -> EmulatorConfig:
        """Validated partial update; untouched fields keep their objects (fault counts survive)."""
        validated = EmulatorConfig.model_validate({**self.config.model_dump(), **patch})
        self.clock.now(self.config.time_scale)  # time so far runs at the old scale
        self.config = self.config.model_copy(update={k: getattr(validated, k) for k in patch})
        self.clock.now(self.config.time_scale)  # ...and from here on at the new one
        return self.config

    def set_model(self, model_id: str, patch: dict[str, Any]) -> EmulatedModel:
        """Add a model or change some fields of one (the API moving on: a retirement, a new
        limit); the rest of the config is untouched."""
        current = self.config.models.get(model_id)
        base = {} if current is None else current.model_dump()
        model = EmulatedModel.model_validate({**base, **patch})
        self.configure({"models": {**self.config.models, model_id: model}})
        return model

    def remove_model(self, model_id: str) -> None:
        """Forget a model: requests naming it (or its aliases) become unknown-model errors."""
        if model_id not in self.config.models:
            raise KeyError(model_id)
        models = {name: model for name, model in self.config.models.items() if name != model_id}
        self.configure({"models": models})

    def reset(self, config: EmulatorConfig | None = None) -> None:
        """Forget batches, the create log, counters and clock offset; optionally swap config."""
        with self.store.lock:
            if config is not None:
                self.config = config.model_copy(deep=True)
            self.clock.reset_offset()
            self._fresh()

    def create(self, raw: bytes, api_version: str, betas: tuple[str, ...] = ()) -> Batch:
        config = self.config
        items = parse_create_body(raw, config.max_requests)
        index = model_index(config.models)
        prepared = [prepare(cid, params, index, api_version, betas) for cid, params in items]
        with self.store.lock:
            plans = [self.planner.plan(item, config.outcome_rules) for item in prepared]
            batch = Batch(
                id=ids.batch_id(),
                created_at=self.stamp(),
                processing_seconds=config.processing_seconds,
                custom_ids=[item.custom_id for item in prepared],
                # The prompt's size is in the plan: keeping the prompts would hold a 256 MB
                # create's documents for as long as the batch lives.
                params=[reply_params(item.params) for item in prepared],
                hashes=[item.params_hash for item in prepared],
                plans=plans,
                usage_override=config.usage_override,
                betas=betas,
            )
            self.store.add(batch, body_bytes=len(raw))
        return batch

    def cancel(self, batch_id: str) -> Batch:
        with self.store.lock:
            batch = self.store.get(batch_id)
            now = self.stamp()
            status = batch.status(now)
            if status == "ended":
                raise invalid_request(
                    f"Message Batch {batch_id} has already ended and cannot be canceled."
                )
            if status == "in_progress":
                batch.cancel_at = now
                batch.cancel_seconds = self.config.cancel_seconds
        return batch

    def delete(self, batch_id: str) -> None:
        with self.store.lock:
            batch = self.store.get(batch_id)
            if batch.status(self.now()) != "ended":
                raise invalid_request(
                    "In progress batches cannot be deleted. Consider canceling the batch instead."
                )
            self.store.remove(batch_id)

    def results(self, batch_id: str) -> Iterator[bytes]:
        """Raise 404 now if there is nothing to download; otherwise a lazy chunk iterator."""
        batch = self.store.get(batch_id)
        now = self.now()
        if batch.status(now) != "ended" or now >= batch.archives_at:
            raise not_found(f"Message Batch {batch_id} has no available results.")
        return result_chunks(batch, self.config.shuffle_results)

    def message(
        self, raw: bytes, api_version: str, betas: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """A synchronous Messages API reply (service tier standard)."""
        check_message_betas(betas)
        params = parse_json(raw)
        if not isinstance(params, dict):
            raise invalid_request("Input should be a valid dictionary")
        config = self.config
        check_params(params, model_index(config.models), api_version, batch=False, betas=betas)
        canonical = canonical_json(params)
        digest = sha256_hex(canonical)
        directive = _message_directive(params)
        with self.store.lock:
            cache = self.planner.cache_use(cache_prefix(params, canonical))
            forced = self.planner.forced(digest, _refusal_choice(directive))
        plan = succeeded_plan(cache, forced, directive, input_token_estimate(params, canonical))
        reply = reply_message(params, digest, ids.message_id(), plan, config.usage_override, "standard")
        with self.store.lock:
            self.message_log.append({"params_hash": digest, "message_id": reply["id"]})
        return reply

    def batch_json(self, batch: Batch, base_url: str) -> dict[str, Any]:
        incremental = self.config.counts_mode == "incremental"
        return batch_json(batch, self.now(), incremental, base_url)

    def stats(self) -> dict[str, Any]:
        return {
            "calls": {op: self.calls.get(op, 0) for op in OPERATIONS},
            "faults_remaining": self.faults.remaining(self.config.faults),
        }

    def messages(self) -> list[dict[str, str]]:
        """The `POST /v1/messages` calls answered with a message (not faulted, not invalid)."""
        with self.store.lock:
            return list(self.message_log)

    def creates(self) -> list[dict[str, Any]]:
        with self.store.lock:
            return [record.to_json() for record in self.store.creates]


def _message_directive(params: dict[str, Any]) -> Directive | None:
    """The request's directive; a malformed one is ignored here (user_id is opaque to the
    real API), unlike in a batch, where it makes an errored line."""
    text = directive_text(params)
    if text is None:
        return None
    try:
        return parse_directive(text)
    except ValueError:
        return None


def _refusal_choice(directive: Directive | None) -> tuple[Outcome, int | None] | None:
    """On messages only a refusal (and input_tokens=, output_tokens=) applies: errored,
    canceled and expired are outcomes of batch lines, and HTTP failures are what faults are
    for."""
    if directive is None or directive.outcome.refusal is None:
        return None
    return directive.outcome, directive.first
