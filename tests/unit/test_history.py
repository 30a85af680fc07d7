"""The history checker catches each broken promise on hand-made histories."""

from batchbus.services.batcher.batching import custom_id
from tests.fault.history import Create, History, Publish, Stored, check

TENANT = "acme"


def cid(task_id: str, attempt: int = 1) -> str:
    return custom_id(TENANT, task_id, attempt)


def healthy() -> History:
    """Three tasks, one of which errored once and succeeded on its second attempt."""
    return History(
        TENANT,
        publishes=[Publish("a", 1), Publish("b", 2), Publish("c", 3)],
        creates=[Create("b1", (cid("a"), cid("b"), cid("c"))), Create("b2", (cid("c", 2),))],
        results=[Stored("a", "succeeded", 1), Stored("b", "errored", 1),
                 Stored("c", "succeeded", 2)])


def test_a_healthy_history_has_no_violations() -> None:
    verdict = check(healthy())
    assert verdict.ok, verdict.violations
    assert (verdict.tasks, verdict.acked, verdict.creates, verdict.submitted, verdict.results) \
        == (3, 3, 2, 4, 3)
    assert verdict.statuses == {"succeeded": 2, "errored": 1}


def test_an_acked_task_without_a_result_is_lost() -> None:
    history = healthy()
    history.results = [r for r in history.results if r.task_id != "b"]
    verdict = check(history)
    assert verdict.lost == ["b"]
    assert not verdict.ok


def test_an_unacked_task_without_a_result_is_unknown_not_lost() -> None:
    history = healthy()
    history.publishes.append(Publish("d", None))
    verdict = check(history)
    assert verdict.ok
    assert (verdict.unknown, verdict.recovered) == (1, 0)


def test_an_unacked_task_with_a_result_is_recovered() -> None:
    history = healthy()
    history.publishes = [Publish("a", None), Publish("a", 7), Publish("b", 2),
                         Publish("c", None)]  # a retried publish; c's ack never came
    verdict = check(history)
    assert verdict.ok
    assert (verdict.tasks, verdict.acked, verdict.unknown, verdict.recovered) == (3, 2, 1, 1)
    assert verdict.unacked_attempts == 2


def test_a_second_stored_result_is_a_duplicate() -> None:
    history = healthy()
    history.results.append(Stored("a", "succeeded", 1))
    assert check(history).duplicated == {"a": 2}


def test_an_attempt_in_two_creates_is_double_billed() -> None:
    history = healthy()
    history.creates.append(Create("b3", (cid("a"),)))
    assert check(history).double_billed == {cid("a"): ["b1", "b3"]}


def test_an_attempt_twice_in_one_create_is_double_billed() -> None:
    history = healthy()
    history.creates[1] = Create("b2", (cid("c", 2), cid("c", 2)))
    assert check(history).double_billed == {cid("c", 2): ["b2", "b2"]}


def test_a_new_attempt_after_the_success_is_caught() -> None:
    history = healthy()
    history.creates.append(Create("b3", (cid("a", 2),)))
    verdict = check(history)
    assert verdict.after_success == [cid("a", 2)]
    assert verdict.double_billed == {}


def test_a_success_no_create_paid_for_is_caught() -> None:
    history = healthy()
    history.creates = history.creates[:1]  # c's second attempt never reached the API
    assert check(history).unbilled_success == ["c"]


def test_a_result_for_a_task_never_published_is_unexpected() -> None:
    history = healthy()
    history.results.append(Stored("zz", "succeeded", 1))
    assert check(history).unexpected == ["zz"]


def test_other_tenants_creates_are_ignored() -> None:
    history = healthy()
    other = custom_id("other", "a", 1)
    history.creates += [Create("x1", (other,)), Create("x2", (other,))]
    verdict = check(history)
    assert verdict.ok
    assert verdict.creates == 2


def test_violations_are_summarised_with_a_count_and_examples() -> None:
    history = healthy()
    history.results = []
    verdict = check(history)
    assert verdict.violations == {"lost": {"count": 3, "examples": ["a", "b", "c"]}}
    assert "lost=3" in verdict.summary()
