"""Held task messages count as the batcher's own only while their keep-alives are on time."""

from time import monotonic

from batchbus.services.batcher.ownership import MARGIN, Ownership


def test_fresh_messages_are_owned() -> None:
    ownership = Ownership(ack_wait=30)
    ownership.restart(monotonic())
    assert ownership.owned()


def test_messages_delivered_longer_ago_than_the_margin_of_the_ack_wait_are_not() -> None:
    ownership = Ownership(ack_wait=30)
    ownership.restart(monotonic() - 30 * MARGIN - 1)  # as after a pause of that long
    assert not ownership.owned()
    assert ownership.owned_since(monotonic())


async def test_a_lapsed_keep_alive_is_not_sent_and_does_not_revive_ownership() -> None:
    ownership = Ownership(ack_wait=30)
    ownership.restart(monotonic() - 60)
    assert await ownership.keep([]) is False
    assert not ownership.owned()


async def test_a_keep_alive_in_time_renews_ownership() -> None:
    ownership = Ownership(ack_wait=30)
    ownership.restart(monotonic() - 20)
    assert await ownership.keep([]) is True
    assert monotonic() - ownership.kept_at < 1
