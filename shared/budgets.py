"""Per-tenant daily budgets: the ledger in KV that intake reserves from and final results
settle (intake's gate, which decides what a task may cost, is services/intake/budgets.py).

Each tenant's day is one key `<tenant>.<YYYY-MM-DD>` (UTC) in the `budgets` bucket, holding
the USD reserved and spent that day as an exact decimal string. Intake adds a task's worst
case; the task's final result swaps it for the real cost. Every change is a compare-and-set
on the key's revision, so intake replicas and notifiers never lose one another's updates.
"""

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, Literal

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from batchbus.shared import subjects
from batchbus.shared.models import Reservation
from batchbus.shared.pricing import PriceTable, TokenCounts

log = logging.getLogger("batchbus.budgets")

ZERO = Decimal(0)
CAS_TRIES = 100  # compare-and-set attempts before giving up (each loses to another writer)
# After a lost compare-and-set, wait a random while (doubling, capped): a replica with a queue
# of changes and a fresh revision would otherwise win every round and starve the other.
CAS_BACKOFF_SECONDS, CAS_MAX_BACKOFF_SECONDS = 0.001, 0.1
KEYS_REMEMBERED = 10_000  # tenant-days whose last value a process keeps; then it forgets
Change = Callable[[Decimal | None], Decimal | None]


SettleOutcome = Literal["settled", "held"]


@dataclass(frozen=True)
class Reserved:
    """What `Budgets.reserve` did: the reservation (None: over budget), the day's total a
    refusal saw (for its message; zero when reserved), and whether the reservation is new
    (False: an earlier delivery's, reused, which is not counted again)."""

    reservation: Reservation | None
    total: Decimal
    new: bool


@dataclass(frozen=True)
class _Op:
    change: Change
    done: "asyncio.Future[tuple[Decimal | None, Decimal | None]]"


def spent_usd(prices: PriceTable, model: str, usage: dict[str, Any] | None,
              realtime: bool) -> Decimal | None:
    """What a final result really cost, exactly (None: the model has no price)."""
    if not usage:
        return ZERO  # the request never ran: nothing was billed
    full = prices.realtime_usd(model, TokenCounts.from_usage(usage))
    if full is None:
        return None
    return full if realtime else full * prices.batch_discount


def usd(amount: Decimal) -> str:
    """Money as the user reads it: every digit, no exponent."""
    return f"${amount.normalize():f}" if amount else "$0"


class Budgets:
    """The `budgets` bucket: daily totals changed only by compare-and-set.

    Within one process, changes to the same key are written together, and the last value and
    revision written are remembered, so a write is one KV round trip unless another process
    wrote in between.
    """

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv
        self._queues: dict[str, list[_Op]] = {}  # changes waiting for the next write
        self._writing: set[str] = set()  # keys with a write under way
        self._known: dict[str, tuple[Decimal, int]] = {}  # key -> (total, revision)

    async def total(self, tenant: str, day: date) -> Decimal:
        """USD reserved and spent by the tenant on `day`."""
        found = await self._read(day_key(tenant, day))
        return found[0] if found else ZERO

    async def reserve(self, tenant: str, task_id: str, day: date, amount: Decimal,
                      budget: Decimal, redelivered: bool) -> "Reserved":
        """Reserves `amount` for the task if the day's total stays within `budget`, once: a
        marker key remembers the reservation, so a redelivered task reuses it instead of
        reserving twice."""
        marker = f"{day_key(tenant, day)}.{task_id}"
        if redelivered and (earlier := await self._marker(marker)) is not None:
            return Reserved(earlier, ZERO, new=False)

        def add(total: Decimal | None) -> Decimal | None:
            held = total or ZERO
            return held + amount if held + amount <= budget else None

        seen, new = await self._change(day_key(tenant, day), add)
        if new is None:
            return Reserved(None, seen or ZERO, new=False)
        reservation = Reservation(day=day, usd=amount)
        try:
            await self.kv.create(marker, reservation.model_dump_json().encode())
        except KeyWrongLastSequenceError:
            # Another delivery of the same task got there first: keep its reservation only.
            await self.settle(tenant, reservation, ZERO)
            earlier = await self._marker(marker)
            return Reserved(earlier or reservation, ZERO, new=False)
        return Reserved(reservation, ZERO, new=True)

    async def settle(self, tenant: str, reservation: Reservation, actual: Decimal) -> None:
        """Replaces the reservation with the real cost (zero releases it). A day whose key
        has expired is left alone; a total never goes below zero."""
        def swap(total: Decimal | None) -> Decimal | None:
            if total is None:
                return None
            return max(ZERO, total - reservation.usd + actual)

        await self._change(day_key(tenant, reservation.day), swap)

    async def settle_final(self, tenant: str, reservation: Reservation | None,
                           actual: Decimal | None) -> SettleOutcome | None:
        """Settles the reservation of a newly stored final result. A failure, or a cost that
        cannot be known (no price), keeps the reservation held: the side that never lets a
        tenant overspend. Never raises, so a result's delivery does not depend on it.
        Returns what happened (None: nothing was reserved), for the caller's metrics."""
        if reservation is None:
            return None
        if actual is None:
            return "held"
        try:
            await self.settle(tenant, reservation, actual)
        except Exception:
            log.exception("could not settle the budget of %s for %s; it stays reserved",
                          tenant, reservation.day)
            return "held"
        return "settled"

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


