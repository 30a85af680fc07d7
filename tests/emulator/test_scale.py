"""A large batch goes through create, retrieve and the streamed results without trouble."""

from __future__ import annotations

import anthropic

from batchbus.emulator import EmulatorHandle
from tests.emulator.helpers import item

SIZE = 10_000


def test_ten_thousand_requests(client: anthropic.Anthropic, emu: EmulatorHandle) -> None:
    emu.configure(counts_mode="incremental")
    requests = [item(f"req-{n:05d}") for n in range(SIZE)]
    requests[7]["params"]["metadata"] = {"user_id": "emulate:errored:api_error"}
    batch = client.messages.batches.create(requests=requests)
    emu.advance(0.5)
    halfway = client.messages.batches.retrieve(batch.id).request_counts
    assert 0 < halfway.processing < SIZE
    emu.advance(1)
    counts = client.messages.batches.retrieve(batch.id).request_counts
    assert (counts.succeeded, counts.errored, counts.processing) == (SIZE - 1, 1, 0)
    seen = {line.custom_id for line in client.messages.batches.results(batch.id)}
    assert len(seen) == SIZE
    assert emu.state.creates()[0]["request_count"] == SIZE
