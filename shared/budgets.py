"""Per-tenant daily budgets: a task's worst-case cost, and reservations held in KV.

Each tenant's day is one key `<tenant>.<YYYY-MM-DD>` (UTC) in the `budgets` bucket, holding
the USD reserved and spent that day as an exact decimal string. Intake adds a task's worst
case; the task's final result swaps it for the real cost. Every change is a compare-and-set
on the key's revision, so intake replicas and notifiers never lose one another's updates.
"""

import asyncio
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from batchbus.shared import subjects
from batchbus.shared.metrics import Metrics
from batchbus.shared.models import Reservation
from batchbus.shared.pricing import MTOK, PriceTable, TokenCounts

log = logging.getLogger("batchbus.budgets")

ZERO = Decimal(0)
# A token of Claude's tokenizer covers at least one byte of text, and the published task's
# bytes hold all the API sees of it (JSON escapes only add bytes): one token per byte bounds
# the input. The API adds a few hundred tokens of its own (the tool-use system prompt).
TOKENS_PER_BYTE = 1
API_OVERHEAD_TOKENS = 512
# Content named by URL or file id is not in the task's bytes: the API scales an image to at
# most about 1,600 tokens; a referenced document can fill a 200K context window.
IMAGE_TOKENS = 1_600
DOCUMENT_TOKENS = 200_000
CAS_TRIES = 100  # compare-and-set attempts before giving up (each loses to another writer)
# After a lost compare-and-set, wait a random while (doubling, capped): a replica with a queue
# of changes and a fresh revision would otherwise win every round and starve the other.
CAS_BACKOFF_SECONDS, CAS_MAX_BACKOFF_SECONDS = 0.001, 0.1
KEYS_REMEMBERED = 10_000  # tenant-days whose last value a process keeps; then it forgets
Change = Callable[[Decimal | None], Decimal | None]


@dataclass(frozen=True)
class _Op:
    change: Change
    done: "asyncio.Future[tuple[Decimal | None, Decimal | None]]"


def parse_budgets(text: str) -> dict[str, Decimal]:
    """Reads INTAKE_BUDGETS: a JSON object `{"acme": 5}` or `acme=5,beta=10.50` (USD a day).

    Raises ValueError with what is wrong, so a bad setting stops the service at start-up.
    """
    text = text.strip()
    if not text:
        return {}
    if text[0] in "{[":
        raw = json.loads(text, parse_float=Decimal)
        if not isinstance(raw, dict):
            raise ValueError("budgets must be a JSON object of tenant -> USD")
        pairs = [(str(k), str(v)) for k, v in raw.items()]
    else:
        pairs = []
        for item in filter(None, (part.strip() for part in text.split(","))):
            tenant, sep, usd = item.partition("=")
            if not sep:
                raise ValueError(f"budget {item!r} is not tenant=USD")
            pairs.append((tenant.strip(), usd.strip()))
    budgets: dict[str, Decimal] = {}
    for tenant, usd in pairs:
        if not subjects.is_token(tenant):
            raise ValueError(f"budget tenant {tenant!r} does not match {subjects.TOKEN_PATTERN}")
        try:
            amount = Decimal(usd)
        except InvalidOperation:
            raise ValueError(f"budget of {tenant} is not a number: {usd!r}") from None
        if not amount.is_finite() or amount < 0:
            raise ValueError(f"budget of {tenant} must be a finite amount >= 0, got {usd}")
        budgets[tenant] = amount
    return budgets


def worst_case_usd(params: dict[str, Any], task_bytes: int, prices: PriceTable,
                   realtime: bool) -> Decimal | None:
    """The most a task can cost: input bounded by its size, output by `max_tokens`.

    `task_bytes` is the size of the whole published task. None when the model has no price.
    Input is priced at the dearest input rate a prompt with `cache_control` could be billed at
    (a 1-hour cache write); batch prices apply unless the task goes real-time.
    """
    rates = prices.rates(str(params.get("model")))
    if rates is None:
        return None
    referenced, caches = _scan(params)
    input_tokens = task_bytes * TOKENS_PER_BYTE + API_OVERHEAD_TOKENS + referenced
    input_rate = max(rates["input"], rates["cache_write_5m"], rates["cache_write_1h"]) \
        if caches else rates["input"]
    usd = (input_tokens * input_rate + int(params["max_tokens"]) * rates["output"]) / MTOK
    return usd if realtime else usd * prices.batch_discount


def spent_usd(prices: PriceTable, model: str, usage: dict[str, Any] | None,
              realtime: bool) -> Decimal | None:
    """What a final result really cost, exactly (None: the model has no price)."""
    if not usage:
        return ZERO  # the request never ran: nothing was billed
    full = prices.realtime_usd(model, TokenCounts.from_usage(usage))
    if full is None:
        return None
    return full if realtime else full * prices.batch_discount


def _scan(params: dict[str, Any]) -> tuple[int, bool]:
    """Tokens of content named by URL or file id, and whether any block asks for caching."""
    referenced, caches = 0, False
    stack: list[Any] = [params]
    while stack:  # iterative: a deeply nested task must not hit the recursion limit
        value = stack.pop()
        if isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, dict):
            caches = caches or "cache_control" in value
            source = value.get("source")
            if isinstance(source, dict) and source.get("type") in ("url", "file"):
                referenced += IMAGE_TOKENS if value.get("type") == "image" else DOCUMENT_TOKENS
            stack.extend(value.values())
    return referenced, caches


@dataclass(frozen=True)
class Refusal:
    """Why a task does not fit its tenant's budget; `message` carries the figures."""

    reason: str  # "over_budget" or "unpriced_model", a metric label and the error type
    message: str


def usd(amount: Decimal) -> str:
    """Money as the user reads it: every digit, no exponent."""
    return f"${amount.normalize():f}" if amount else "$0"


class Budgets:
    """The `budgets` bucket: daily totals changed only by compare-and-set.

    Within one process, changes to the same key are written together, and the last value and
    revision written are remembered, so a write is one KV round trip unless another process
    wrote in between.
    """

    def __init__(self, kv: KeyValue, metrics: Metrics | None = None) -> None:
        self.kv = kv
        self.metrics = metrics
        self._queues: dict[str, list[_Op]] = {}  # changes waiting for the next write
        self._writing: set[str] = set()  # keys with a write under way
        self._known: dict[str, tuple[Decimal, int]] = {}  # key -> (total, revision)

    async def total(self, tenant: str, day: date) -> Decimal:
        """USD reserved and spent by the tenant on `day`."""
        found = await self._read(day_key(tenant, day))
        return found[0] if found else ZERO

    async def hold(self, tenant: str, task_id: str, day: date, amount: Decimal, budget: Decimal,
                   redelivered: bool) -> Reservation | Refusal:
        """Reserves `amount` for the task, once: a marker key remembers the reservation, so a
        redelivered task reuses it instead of reserving twice."""
        marker = f"{day_key(tenant, day)}.{task_id}"
        if redelivered and (earlier := await self._marker(marker)) is not None:
            return earlier

        def add(total: Decimal | None) -> Decimal | None:
            held = total or ZERO
            return held + amount if held + amount <= budget else None

        seen, new = await self._change(day_key(tenant, day), add)
        if new is None:
            self.count("refused")
            return Refusal("over_budget", f"over the daily budget of tenant {tenant}: "
                           f"{usd(seen or ZERO)} of {usd(budget)} for {day.isoformat()} (UTC) is "
                           f"already reserved or spent, and this task may cost up to "
                           f"{usd(amount)}")
        reservation = Reservation(day=day, usd=amount)
        try:
            await self.kv.create(marker, reservation.model_dump_json().encode())
        except KeyWrongLastSequenceError:
            # Another delivery of the same task got there first: keep its reservation only.
            await self.settle(tenant, reservation, ZERO)
            earlier = await self._marker(marker)
            return earlier or reservation
        self.count("reserved")
        return reservation

    async def settle(self, tenant: str, reservation: Reservation, actual: Decimal) -> None:
        """Replaces the reservation with the real cost (zero releases it). A day whose key
        has expired is left alone; a total never goes below zero."""
        def swap(total: Decimal | None) -> Decimal | None:
            if total is None:
                return None
            return max(ZERO, total - reservation.usd + actual)

        await self._change(day_key(tenant, reservation.day), swap)

    async def settle_final(self, tenant: str, reservation: Reservation | None,
                           actual: Decimal | None) -> None:
        """Settles the reservation of a newly stored final result. A failure, or a cost that
        cannot be known (no price), keeps the reservation held: the side that never lets a
        tenant overspend. Never raises, so a result's delivery does not depend on it."""
        if reservation is None:
            return
        outcome = "held"
        if actual is not None:
            try:
                await self.settle(tenant, reservation, actual)
                outcome = "settled"
            except Exception:
                log.exception("could not settle the budget of %s for %s; it stays reserved",
                              tenant, reservation.day)
        if self.metrics is not None:
            self.metrics.budget_settlements.labels(outcome).inc()

    async def _change(self, key: str, change: Change) -> tuple[Decimal | None, Decimal | None]:
        """Applies `change` to the key's total (None: absent) by compare-and-set; `change`
        returning None leaves the total as it is. Returns the total `change` saw and the one
        it made (None: no change).

        Changes that arrive while a write of the key is under way queue up, and the next write
        applies them all in order (group commit): one KV round trip for many tasks.
        """
        op = _Op(change, asyncio.get_running_loop().create_future())
        self._queues.setdefault(key, []).append(op)
        if key not in self._writing:  # no write under way: this caller writes, for everyone
            self._writing.add(key)
            try:
                while ops := self._queues.pop(key, None):
                    await self._commit(key, ops)
            finally:
                self._writing.discard(key)
                for left in self._queues.pop(key, []):  # only if cancelled mid-write
                    left.done.set_exception(RuntimeError(f"budget {key}: write interrupted"))
        return await op.done

    async def _commit(self, key: str, ops: list[_Op]) -> None:
        """One compare-and-set for `ops`; a conflict re-reads the total and applies them again
        (they are pure functions of it). Every op's future gets its outcome or the error."""
        try:
            outcomes = await self._write(key, ops)
        except Exception as exc:  # each waiting caller raises it; later changes still go
            for op in ops:
                op.done.set_exception(exc)
            return
        except BaseException:  # cancelled: the service is stopping
            for op in ops:
                op.done.set_exception(RuntimeError(f"budget {key}: write interrupted"))
            raise
        for op, outcome in zip(ops, outcomes, strict=True):
            op.done.set_result(outcome)

    async def _write(self, key: str,
                     ops: list[_Op]) -> list[tuple[Decimal | None, Decimal | None]]:
        known, fresh = self._known.get(key), False
        for tries in range(CAS_TRIES):
            if known is None and not fresh:
                known, fresh = await self._read(key), True
            total = known[0] if known else None
            outcomes: list[tuple[Decimal | None, Decimal | None]] = []
            for op in ops:
                made = op.change(total)
                outcomes.append((total, made))
                total = made if made is not None else total
            if not fresh and any(made is None for _, made in outcomes):
                known = None  # refused on a remembered total: decide on the stored one
                continue
            if all(made is None for _, made in outcomes):
                return outcomes
            assert total is not None
            value = format(total, "f").encode()
            try:
                revision = await (self.kv.update(key, value, last=known[1]) if known
                                  else self.kv.create(key, value))
            except KeyWrongLastSequenceError:  # another writer: read its value, retry
                known, fresh = None, False
                await asyncio.sleep(random.uniform(0, min(
                    CAS_MAX_BACKOFF_SECONDS, CAS_BACKOFF_SECONDS * 2 ** tries)))
                continue
            self._known[key] = (total, revision)
            return outcomes
        raise RuntimeError(f"budget {key}: {CAS_TRIES} compare-and-set conflicts in a row")

    async def _read(self, key: str) -> tuple[Decimal, int] | None:
        if len(self._known) > KEYS_REMEMBERED:
            self._known.clear()  # past days' totals, mostly; any key is simply read again
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            self._known.pop(key, None)
            return None
        found = (Decimal((entry.value or b"0").decode()), entry.revision or 0)
        self._known[key] = found
        return found

    async def _marker(self, key: str) -> Reservation | None:
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return None
        return Reservation.model_validate_json(entry.value or b"")

    def count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.budget_reservations.labels(outcome).inc()


def day_key(tenant: str, day: date) -> str:
    return f"{tenant}.{day.isoformat()}"


async def release(js: JetStreamContext, tenant: str, reservation: Reservation | None,
                  actual: Decimal = ZERO) -> None:
    """Settles one final result's reservation from a service that keeps no Budgets (a cancel
    of a task still waiting); like `Budgets.settle_final`, it never raises."""
    if reservation is None:
        return
    try:
        kv = await js.key_value(subjects.KV_BUDGETS)
    except Exception:
        log.exception("no budgets bucket; the reservation of %s stays held", tenant)
        return
    await Budgets(kv).settle_final(tenant, reservation, actual)


class BudgetGate:
    """Intake's side: which tenants have a budget, and whether a task fits its day's."""

    def __init__(self, budgets: Budgets, limits: dict[str, Decimal], prices: PriceTable) -> None:
        self.budgets = budgets
        self.limits = limits
        self.prices = prices

    async def admit(self, tenant: str, task_id: str, params: dict[str, Any], task_bytes: int,
                    day: date, realtime: bool, redelivered: bool) -> Reservation | Refusal | None:
        """The task's reservation, a refusal, or None for a tenant without a budget."""
        budget = self.limits.get(tenant)
        if budget is None:
            return None
        worst = worst_case_usd(params, task_bytes, self.prices, realtime)
        if worst is None:
            self.budgets.count("refused")
            return Refusal("unpriced_model", f"tenant {tenant} has a daily budget, and model "
                           f"{params.get('model')!r} has no price, so this task's cost cannot "
                           "be bounded")
        return await self.budgets.hold(tenant, task_id, day, worst, budget, redelivered)
