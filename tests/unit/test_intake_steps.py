"""Intake's batch runner: each step keeps the batch's order, awaits round trips together, and
fails only the message whose step failed; the batch is then acked or nak'ed message by message."""

from typing import Any, cast

from nats.aio.msg import Msg

from batchbus.services.intake.steps import RETRY_DELAY, Batch


class Delivered(Msg):
    """A delivered JetStream message that records how it was answered instead of sending it."""

    def __init__(self, seq: int) -> None:
        super().__init__(cast(Any, None), "batchbus.tasks.acme",
                         f"$JS.ACK.tasks.intake.1.{seq}.{seq}.1700000000000000000.0", b"{}")
        self.answers: list[str] = []

    async def ack(self) -> None:
        self.answers.append("ack")

    async def nak(self, delay: float | None = None) -> None:
        self.answers.append(f"nak {delay}")


def msgs(n: int) -> list[Delivered]:
    return [Delivered(seq) for seq in range(1, n + 1)]


async def later(value: int) -> int:
    return value


async def broken() -> int:
    raise RuntimeError("round trip failed")


async def test_a_step_keeps_order_drops_settled_and_awaits_round_trips_in_place() -> None:
    batch = Batch(msgs(5))
    steps = {1: 10, 2: None, 3: later(30), 4: later(40), 5: 50}  # None: settled (rejected)
    out = await batch.each(batch.msgs, lambda m: m, lambda m: steps[m.metadata.sequence.stream])
    assert out == [10, 30, 40, 50]
    assert batch.failed == {}


async def test_a_failing_step_or_round_trip_fails_only_its_own_message() -> None:
    batch = Batch(msgs(4))

    def step(msg: Msg) -> Any:
        seq = msg.metadata.sequence.stream
        if seq == 2:
            raise ValueError("step failed")
        return broken() if seq == 3 else seq

    assert await batch.each(batch.msgs, lambda m: m, step) == [1, 4]
    await batch.answer()
    answers = [cast(Delivered, m).answers for m in batch.msgs]
    assert answers == [["ack"], [f"nak {RETRY_DELAY}"], [f"nak {RETRY_DELAY}"], ["ack"]]
