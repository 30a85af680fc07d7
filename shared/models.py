"""Message contracts: the public Task, Result and BatchEvent, and internal messages."""

import json
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import from_json, to_json
from typing_extensions import TypedDict  # before Python 3.12 pydantic validates only this one


def parse_json(data: bytes | str) -> Any:
    """JSON we wrote or the API sent, by pydantic's parser (a fraction of json.loads's
    time); what it refuses (a lone surrogate json.dumps escaped, nesting past 200)
    json.loads reads. Strings are cached by key only: values are mostly one-off ids."""
    try:
        return from_json(data, cache_strings="keys")
    except ValueError:
        return json.loads(data)


# A request's betas as batches compare them (a batch's `anthropic-beta` header): sorted, each
# once, so that order and repeats never make a new set.
Betas = Annotated[list[str], AfterValidator(lambda betas: sorted(set(betas)))]

Status = Literal["succeeded", "errored", "expired", "canceled", "rejected"]
Route = Literal["auto", "batch", "realtime"]


class Task(BaseModel):
    """What a user publishes on `batchbus.tasks.<tenant>`; `params` passes through untouched.

    Params too large for one NATS message are stored in the tenant's payload bucket instead,
    and `params_object` names them (docs/payloads.md): one of the two, never both."""

    model_config = ConfigDict(extra="forbid")

    task_id: str
    params: dict[str, Any] = Field(default_factory=dict)
    params_object: str | None = Field(None, min_length=1, max_length=255)
    metadata: dict[str, Any] = Field(default_factory=dict)
    deadline: AwareDatetime | None = None  # RFC 3339 requires the offset; naive is rejected
    route: Route = "auto"
    webhook: str | None = None
    # Betas the request needs (the batch's `anthropic-beta` header): tasks with different
    # sets never share a batch.
    betas: Betas = Field(default_factory=list)
    # A model to send the task to once more if its model refuses it (stop_reason "refusal").
    fallback_model: str | None = None

    @model_validator(mode="after")
    def _params_or_object(self) -> "Task":
        given = "params" in self.model_fields_set
        if given == (self.params_object is not None):
            raise ValueError("give either params or params_object (the name of the stored "
                             "params in the tenant's payload bucket), not both" if given else
                             "params is required (or params_object naming stored params)")
        return self


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


class UsageFields(TypedDict):
    """A Usage as a plain dict, as the notifier builds it per result (see ResultFields)."""

    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int


class Cost(BaseModel):
    batch_usd: float
    realtime_usd: float
    saved_usd: float

    @property
    def spent_usd(self) -> Decimal:
        """What was spent (`batch_usd`: full price for real-time), exactly as it prints: a
        budget adds it to a Decimal total."""
        return Decimal(repr(self.batch_usd))


class CostFields(TypedDict):
    """A Cost as a plain dict (see ResultFields)."""

    batch_usd: float
    realtime_usd: float
    saved_usd: float


class ErrorInfo(BaseModel):
    type: str
    message: str


class Refusal(BaseModel):
    """Why the model declined: a succeeded answer with `stop_reason: "refusal"`."""

    category: str | None = None  # the API's `stop_details.category`; None when unnamed
    explanation: str | None = None


class RefusalFields(TypedDict):
    category: str | None
    explanation: str | None


class Result(BaseModel):
    """The one final result of a task, on `batchbus.results.<tenant>.<task_id>`."""

    task_id: str
    tenant: str
    status: Status
    message: dict[str, Any] | None = None
    error: ErrorInfo | None = None
    usage: Usage | None = None
    cost: Cost | None = None
    batch_id: str | None = None
    route: Literal["batch", "realtime"] | None = None
    attempts: int = 0
    metadata: dict[str, Any] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)  # e.g. a deprecated model's retirement
    refusal: Refusal | None = None
    # An answer too large for one NATS message: `message` is null and this names the object
    # in the tenant's payload bucket that holds it (the client reads it back by itself).
    message_object: str | None = None


class ResultFields(TypedDict):
    """A Result as the notifier's fast path holds it: building the model per result was a
    sixth of its CPU. Field for field the Result, in its order (its JSON is the model's, key
    order included); Usage and Cost as their dicts, ErrorInfo as built. A unit test holds
    these and the models together."""

    task_id: str
    tenant: str
    status: Status
    message: dict[str, Any] | None
    error: ErrorInfo | None
    usage: UsageFields | None
    cost: CostFields | None
    batch_id: str | None
    route: Literal["batch", "realtime"] | None
    attempts: int
    metadata: dict[str, Any]
    warnings: list[str]
    refusal: RefusalFields | None
    message_object: str | None


class BatchEvent(BaseModel):
    """Lifecycle of one batch, on `batchbus.events.batches.<batch_id>`."""

    batch_id: str
    event: Literal["submitted", "progress", "ended"]
    processing_status: str
    request_counts: dict[str, int]
    created_at: datetime | None = None
    ended_at: datetime | None = None


class _Internal(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Attempt(_Internal):
    """How one earlier attempt of a task ended."""

    attempt: int
    batch_id: str
    outcome: str  # the line's result type, an errored line's error type, or "refusal"
    message: str = ""
    model: str | None = None  # the attempt's model, when a fallback changed it after
    cost: Cost | None = None  # what a billed attempt that is not the final one cost


class Reservation(_Internal):
    """The share of a tenant's daily budget held for one task until its final result."""

    day: date  # the UTC day whose budget holds it
    usd: Decimal  # worst case at intake; settled against the real cost


class AcceptedTask(_Internal):
    """A validated task attempt on its way to the API (intake or a retry -> batcher)."""

    tenant: str
    task_id: str
    attempt: int = 1
    params: dict[str, Any]
    metadata: dict[str, Any] = Field(default_factory=dict)
    published_at: datetime
    not_before: datetime | None = None  # a retry waits out its back-off
    history: list[Attempt] = Field(default_factory=list)
    deadline: datetime | None = None
    webhook: str | None = None  # name of one of the tenant's configured endpoints
    reservation: Reservation | None = None
    betas: Betas = Field(default_factory=list)
    fallback_model: str | None = None  # cleared once used
    warnings: list[str] = Field(default_factory=list)  # intake's, carried to the Result
    # The earlier attempts that were billed (a refusal before its fallback), summed.
    prior_cost: Cost | None = None
    # Params stored in the tenant's payload bucket under this name (too large for a message);
    # `params` then holds only their model, which the stored ones are sent with.
    params_object: str | None = None
    params_digest: str | None = None  # the object's as checked: a replaced one is refused


class ManifestEntry(_Internal):
    """Maps one `custom_id` of a batch back to the task attempt it carries, with what the
    notifier needs of the task for its result (it reads the task itself only to retry it)."""

    custom_id: str
    tenant: str
    task_id: str
    attempt: int
    model: str
    metadata: dict[str, Any]
    published_at: datetime
    accepted_seq: int
    webhook: str | None = None
    reservation: Reservation | None = None
    warnings: list[str] = Field(default_factory=list)  # the task's, for its final result
    fallback_model: str | None = None  # where a refused request goes next
    prior_cost: Cost | None = None  # what the task's earlier attempts cost (a refusal)
    params_object: str | None = None  # stored params, deleted once the final result is

    # Stored as a positional JSON row: a 100,000-line manifest is held in memory while its
    # results stream in, and field names would double its size. Trailing defaults are left
    # out, so rows written before a field was added still read; no warnings are a null.
    def to_row(self) -> bytes:
        return self.row(self.custom_id, self.tenant, self.task_id, self.attempt, self.model,
                        self.metadata, self.published_at, self.accepted_seq, self.webhook,
                        self.reservation, self.warnings, self.fallback_model, self.prior_cost,
                        self.params_object)

    @staticmethod
    def row(custom_id: str, tenant: str, task_id: str, attempt: int, model: str,
            metadata: dict[str, Any], published_at: datetime, accepted_seq: int,
            webhook: str | None, reservation: Reservation | None, warnings: list[str],
            fallback_model: str | None, prior_cost: Cost | None,
            params_object: str | None = None) -> bytes:
        """The row of the entry these fields make, without building it (the batcher writes
        one per task it takes)."""
        values: list[Any] = [custom_id, tenant, task_id, attempt, model, metadata,
                             published_at.isoformat(), accepted_seq, webhook,
                             reservation.model_dump(mode="json") if reservation else None,
                             warnings or None, fallback_model,
                             prior_cost.model_dump() if prior_cost else None, params_object]
        while values[-1] is None:
            values.pop()
        return to_json(values)  # pydantic's encoder: compact UTF-8, twice json.dumps' speed

    @classmethod
    def from_row(cls, row: bytes) -> "ManifestEntry":
        values = parse_json(row)
        if len(values) > _WARNINGS and values[_WARNINGS] is None:
            values[_WARNINGS] = []  # none, written as a null to keep a later field's place
        return cls.model_validate(dict(zip(_ROW_FIELDS, values, strict=False)))


_ROW_FIELDS = tuple(ManifestEntry.model_fields)  # the row's positions
_WARNINGS = _ROW_FIELDS.index("warnings")

# intent -> submitted -> ended -> delivered; the record goes once delivered *and* acked.
BatchState = Literal["intent", "submitted", "ended", "delivered"]


class BatchRecord(_Internal):
    """Write-ahead state of one batch, kept in KV from before the create until delivery."""

    intent_id: str
    state: BatchState
    requests: int
    bytes: int
    intent_at: datetime
    batch_id: str | None = None
    created_at: datetime | None = None
    expires_at: datetime | None = None
    ended_at: datetime | None = None
    # True once every task message of the batch is acknowledged to NATS.
    acked: bool = False
    tenants: list[str] = Field(default_factory=list)  # whose tasks it holds (for their events)
    # Result lines the notifier has settled; a restarted notifier skips them.
    lines_done: int = 0
    # The batcher run that wrote the intent: once that run is gone, its intent need not wait
    # to be stale (services/batcher/liveness.py).
    owner: str | None = None


class BatchEnded(_Internal):
    """Poller -> notifier: this batch has ended and its results can be read."""

    intent_id: str
    batch_id: str
    # False for a batch the API never ended in time: its requests count as expired.
    results_available: bool = True


class DeadLetter(BaseModel):
    """A task that used up its attempts, with everything needed to look into it."""

    tenant: str
    task_id: str
    params: dict[str, Any]
    metadata: dict[str, Any]
    history: list[Attempt]
    result: Result
    params_object: str | None = None  # the stored params, kept until the bucket's max age
