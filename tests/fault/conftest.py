"""Fault tests run the services with short timeouts, so recovery happens in seconds."""

import pytest

FAST_RECOVERY = {
    "BATCHER_ACK_WAIT_SECONDS": "2",
    "ANTHROPIC_TIMEOUT_SECONDS": "2",
    "BATCHER_INTENT_STALE_SECONDS": "3",
    "BATCHER_RECOVERY_INTERVAL_SECONDS": "0.5",
    "BATCHER_RETRY_MAX_DELAY_SECONDS": "1",
    "POLLER_LEASE_SECONDS": "2",
    "NOTIFIER_ACK_WAIT_SECONDS": "4",
}


@pytest.fixture(scope="module")
def pipeline_overrides() -> dict[str, str]:
    return dict(FAST_RECOVERY)
