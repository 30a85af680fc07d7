"""What a task message is known to be at each of intake's steps, and the runner that takes a
whole fetched batch through one step (the steps themselves are in handlers.py)."""

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable, Sequence
from types import CoroutineType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeAlias, TypeVar

from nats.aio.msg import Msg

from batchbus.shared.models import AcceptedTask, Task
from batchbus.shared.payloads import Stored

if TYPE_CHECKING:  # typing_extensions comes with pydantic, but TypeIs only from 4.10 on
    from typing_extensions import TypeIs

log = logging.getLogger("batchbus.intake")

RETRY_DELAY = 2.0  # seconds before a message whose handling failed is tried again

Path = Literal["batch", "realtime"]  # a route decided: where the handoff goes
Claim = Literal["new", "redelivered", "duplicate"]  # what claiming the task's id found


class Admitted(NamedTuple):
    """A task message that passed validation and the webhook check, and has a route.

    A NamedTuple, not a frozen dataclass: one is built per task, and a frozen dataclass's
    __init__ costs about 1 µs more.
    """

    msg: Msg
    seq: int  # its stream sequence: the id of its rejection, the value of its claim
    tenant: str
    task: Task
    route: Path
    reason: str  # why that route: a metric label
    warnings: tuple[str, ...] = ()  # what the user should know (a deprecated model)
    # Its params as stored in the payload bucket (`params_object`), when they are: the task
    # then holds only their small fields, and the message's own size is not the request's.
    stored: Stored | None = None


Claimed: TypeAlias = tuple[Admitted, Claim]
Handoff: TypeAlias = tuple[Admitted, AcceptedTask]  # published for the batcher or real time

T = TypeVar("T")
R = TypeVar("R")
# A step gives what the next step works on, None once the message is settled (rejected, a
# duplicate, canceled), or a coroutine to await when it needs a round trip first.
Step: TypeAlias = Callable[[T], R | Coroutine[Any, Any, R | None] | None]


class Batch:
    """A fetched batch of task messages and which of them failed: each is acked once its
    effects are stored, or nak'ed to be tried again after RETRY_DELAY."""

    def __init__(self, msgs: Sequence[Msg]) -> None:
        self.msgs = msgs
        # Every message's metadata parsed in a loop of its own, ahead of validation: measured
        # 1.4 µs a task less than parsing each amid its validation.
        self.seqs = [msg.metadata.sequence.stream for msg in msgs]
        # By identity: Msg is not hashable, and one batch may hold a message twice.
        self.failed: dict[int, BaseException] = {}

    def fail(self, msg: Msg, exc: BaseException) -> None:
        self.failed[id(msg)] = exc

    async def each(self, items: Iterable[T], msg_of: Callable[[T], Msg],
                   step: Step[T, R]) -> list[R]:
        """Runs `step` for each item, in order; the coroutines it returns (round trips, rare
        on the hot path) run concurrently. An error fails only its own message."""
        outs: list[R | None] = []
        waits: list[tuple[int, T, Coroutine[Any, Any, R | None]]] = []
        for item in items:
            try:
                out = step(item)
            except Exception as exc:
                self.fail(msg_of(item), exc)
                continue
            if _round_trip(out):
                waits.append((len(outs), item, out))
                outs.append(None)  # its place, so the next step keeps the batch's order
            else:
                outs.append(out)
        if waits:
            done = await asyncio.gather(*(w for _, _, w in waits), return_exceptions=True)
            for (place, item, _), outcome in zip(waits, done, strict=True):
                if isinstance(outcome, Exception):
                    self.fail(msg_of(item), outcome)
                elif isinstance(outcome, BaseException):
                    raise outcome
                else:
                    outs[place] = outcome
        return [out for out in outs if out is not None]

    async def answer(self) -> None:
        """Acks each message that did not fail; naks the others, which are tried again after
        a pause, never dropped and never terminated."""
        failed = self.failed
        if failed:  # one line per batch: while NATS is away every message fails alike
            first = next(i for i, msg in enumerate(self.msgs) if id(msg) in failed)
            log.error("%d of %d messages failed (the first at stream seq %s); retrying them",
                      len(failed), len(self.msgs), self.seqs[first],
                      exc_info=failed[id(self.msgs[first])])
        for seq, msg in zip(self.seqs, self.msgs, strict=True):
            try:
                if id(msg) not in failed:
                    await msg.ack()
                else:
                    await msg.nak(delay=RETRY_DELAY)
            except Exception as exc:  # the connection is gone: it comes back after ack_wait
                log.warning("could not answer the message at stream seq %s: %r", seq, exc)


def _round_trip(out: object) -> "TypeIs[Coroutine[Any, Any, Any]]":
    # A concrete type check: the hot path's answers are not coroutines, and an isinstance
    # against the Coroutine ABC would cost several times more for each of them.
    return isinstance(out, CoroutineType)

