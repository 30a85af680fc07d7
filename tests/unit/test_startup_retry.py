"""A service starting while JetStream cannot answer waits for it; other errors still stop it."""

import nats.errors
import pytest
from nats.js.errors import ServiceUnavailableError

from batchbus.shared.app import until_available


async def test_start_up_steps_are_retried_while_jetstream_is_unavailable() -> None:
    failures: list[Exception] = [nats.errors.TimeoutError(), nats.errors.NoRespondersError(),
                                 ServiceUnavailableError()]
    calls = 0

    async def step() -> str:
        nonlocal calls
        calls += 1
        if failures:
            raise failures.pop(0)
        return "ready"

    assert await until_available(step, first_delay=0.0) == "ready"
    assert calls == 4


async def test_other_errors_are_not_retried() -> None:
    calls = 0

    async def step() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("bad configuration")

    with pytest.raises(ValueError, match="bad configuration"):
        await until_available(step, first_delay=0.0)
    assert calls == 1
