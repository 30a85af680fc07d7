"""Chaos runs, Jepsen style: SIGKILLed and paused services, a SIGKILLed NATS server, an API
fault storm — each during a run of thousands of tasks, then the run's history is checked:
nothing lost, one final result per task, no task attempt billed twice, no success resubmitted.

Each run is seeded and prints its seed, its faults and its counts. BATCHBUS_CHAOS_SEED replays
a schedule; BATCHBUS_CHAOS_TASKS and BATCHBUS_CHAOS_ROUNDS size the long variant
(docs/guarantees.md).
"""

import asyncio
import json
import os
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import nats
import pytest

from batchbus.emulator.server import EmulatorHandle
from batchbus.launcher.nats_server import NatsServer, start_nats
from batchbus.launcher.services import SERVICES, Pipeline
from batchbus.shared.payloads import Payloads, params_name
from batchbus.shared.settings import NatsSettings
from tests.fault.conftest import FAST_RECOVERY
from tests.fault.history import (
    History,
    Recorder,
    Verdict,
    check,
    record,
    wait_for_results,
    wait_until_quiet,
)
from tests.integration.helpers import ticket

pytestmark = [pytest.mark.nats, pytest.mark.fault, pytest.mark.slow]

TASKS = int(os.environ.get("BATCHBUS_CHAOS_TASKS", "3000"))
ROUNDS = int(os.environ.get("BATCHBUS_CHAOS_ROUNDS", "4"))
# Bounds grow with the run's size; the CI defaults finish well inside them.
RESULTS_TIMEOUT = 60.0 + TASKS / 50
TEST_TIMEOUT = int(120 + RESULTS_TIMEOUT + 20 * ROUNDS)

# A fault injector: does round `n`'s fault and names it.
Inject = Callable[[int], Awaitable[str]]


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """This module's own file-storage server: one test kills it, and the quiet check must see
    only this module's work."""
    server = start_nats(str(tmp_path_factory.mktemp("chaos-nats")))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pipeline_overrides() -> dict[str, str]:
    return {**FAST_RECOVERY, "BATCHER_MAX_REQUESTS": "500"}  # many batches per run


@dataclass
class Chaos:
    pipeline: Pipeline
    emulator: EmulatorHandle
    nats_server: NatsServer
    tenant: str
    seed: int
    rng: random.Random = field(init=False)
    faults: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    async def run(self, inject: Inject, rounds: int, tasks: int = TASKS,
                  within: float = 1.5) -> Verdict:
        """Publishes `tasks` in `rounds` waves, injecting one fault at a random moment in the
        first `within` seconds of each, then checks the history; fails on any broken promise."""
        work, expected = workload(self.tenant, tasks, self.rng)
        history = History(self.tenant)
        nc = await nats.connect(self.nats_server.url, max_reconnect_attempts=-1,
                                reconnect_time_wait=0.2)
        payloads = Payloads(nc.jetstream(), NatsSettings().payloads_max_age_seconds)
        try:
            for task in work:  # params by reference, stored first as a client does
                if "params_object" in task:
                    await payloads.put(self.tenant, task["params_object"], task.pop("stored"))
            recorder = Recorder(nc, history)
            for n in range(rounds):
                publishing = asyncio.create_task(recorder.publish_all(work[n::rounds]))
                await asyncio.sleep(self.rng.uniform(0.0, within))  # the random moment
                self.faults[await inject(n)] += 1
                await publishing
            acked = {p.task_id for p in history.publishes if p.seq is not None}
            finished = await wait_for_results(nc, self.tenant, acked, RESULTS_TIMEOUT)
        finally:
            await nc.close()
        quiet = finished and await wait_until_quiet(self.nats_server.url, 60)
        verdict = check(await record(history, self.nats_server.url, self.emulator))
        print(f"chaos seed={self.seed} faults={dict(sorted(self.faults.items()))} "
              f"{verdict.summary()}")
        assert verdict.ok, verdict.violations
        assert finished and quiet, "every task has its result, but batchbus never went quiet"
        # A stored-params task whose params went early would end payload_missing: counted here.
        outcomes = Counter((r.status, r.error) for r in history.results)
        assert verdict.statuses == expected, f"outcomes: {dict(outcomes)}"
        return verdict


def workload(tenant: str, count: int, rng: random.Random) -> tuple[list[dict[str, Any]],
                                                                   dict[str, int]]:
    """Tasks with unique prompts; one in twenty fails once with a transient error (retried,
    then succeeds), one in fifty fails for good; one in ten has its params stored in the
    payload bucket (`stored`: their bytes, for the run to store), which must last until its
    final result. Returns them and the final statuses due."""
    tasks, expected = [], Counter[str]()
    for i in range(count):
        task = ticket(i, messages=[{"role": "user", "content": f"{tenant} {i}: parcel late"}])
        roll = rng.random()
        if roll < 0.02:
            task["params"]["metadata"] = {"user_id": "emulate:errored:invalid_request_error"}
            expected["errored"] += 1
        else:
            if roll < 0.07:
                task["params"]["metadata"] = {
                    "user_id": "emulate:errored:overloaded_error:first=1"}
            expected["succeeded"] += 1
        if rng.random() < 0.1:
            stored = json.dumps(task.pop("params")).encode()
            task |= {"params_object": params_name(task["task_id"], stored), "stored": stored}
        tasks.append(task)
    return tasks, dict(expected)


@pytest.fixture
def chaos(pipeline: Pipeline, emulator: EmulatorHandle, nats_server: NatsServer,
          tenant: str) -> Chaos:
    seed = int(os.environ.get("BATCHBUS_CHAOS_SEED") or random.SystemRandom().randrange(2**32))
    print(f"chaos seed={seed} (BATCHBUS_CHAOS_SEED={seed} replays this schedule)")
    return Chaos(pipeline, emulator, nats_server, tenant, seed)


@pytest.mark.timeout(TEST_TIMEOUT)
async def test_services_sigkilled_at_random_moments_lose_nothing_and_bill_once(
        chaos: Chaos) -> None:
    victims = [name for _ in range(ROUNDS) for name in chaos.rng.sample(SERVICES, len(SERVICES))]

    async def kill(n: int) -> str:
        service = chaos.pipeline.services[victims[n]]
        service.kill()
        service.start()
        await asyncio.to_thread(service.wait_ready)
        return f"SIGKILL {victims[n]}"

    await chaos.run(kill, rounds=2 * ROUNDS)
    assert set(chaos.faults) == {f"SIGKILL {name}" for name in SERVICES}


# How long each process is paused: past its ack wait (or the poller's lease), so NATS hands
# its messages to a replica meanwhile. Intake's ack wait is a fixed 30 s; its pause is shorter.
PAUSES = {"batcher": 3.0, "batcher-2": 3.0, "notifier": 5.0, "notifier-2": 5.0,
          "poller": 3.0, "intake": 3.0}
# Other replicas settle a paused batcher's intent once it is this old; the promise holds for
# pauses shorter than this minus ANTHROPIC_TIMEOUT_SECONDS (docs/guarantees.md).
PATIENT_BATCHER = {"BATCHER_INTENT_STALE_SECONDS": "6"}


@pytest.mark.timeout(TEST_TIMEOUT)
async def test_processes_paused_past_their_ack_wait_lose_nothing_and_bill_once(
        chaos: Chaos) -> None:
    batcher = chaos.pipeline.services["batcher"]
    batcher.stop()
    batcher.start(**PATIENT_BATCHER)
    replicas = [chaos.pipeline.add("batcher-2", "batcher", **PATIENT_BATCHER),
                chaos.pipeline.add("notifier-2", "notifier")]
    for service in [batcher, *replicas]:
        await asyncio.to_thread(service.wait_ready)

    victims = [name for _ in range(ROUNDS) for name in chaos.rng.sample(sorted(PAUSES), len(PAUSES))]

    async def pause(n: int) -> str:
        name = victims[n]
        service = chaos.pipeline.services[name]
        service.pause()
        try:
            await asyncio.sleep(PAUSES[name])  # the pause itself
        finally:
            service.resume()
        return f"SIGSTOP {name}"

    try:
        await chaos.run(pause, rounds=2 * ROUNDS)
    finally:
        for replica in replicas:
            replica.resume()
            replica.stop()
            del chaos.pipeline.services[replica.log_path.stem]
        batcher.stop()
        batcher.start()
        await asyncio.to_thread(batcher.wait_ready)


@pytest.mark.timeout(TEST_TIMEOUT)
async def test_nats_sigkilled_and_restarted_on_its_file_store_loses_nothing(
        chaos: Chaos) -> None:
    async def restart(n: int) -> str:
        chaos.nats_server.kill()
        # Down for a moment or past the publishers' 5 s ack timeout (an unknown outcome).
        await asyncio.sleep(chaos.rng.choice([0.0, 1.0, 6.0]))
        await asyncio.to_thread(chaos.nats_server.start_again)
        return "SIGKILL nats-server"

    await chaos.run(restart, rounds=ROUNDS, within=0.05)  # while tasks are being published


def storm(rng: random.Random) -> list[dict[str, Any]]:
    """A burst of API faults in random order: refusals, 5xx, creates accepted and then
    answered with an error or too late, failing polls and downloads, slow answers."""
    rules: list[dict[str, Any]] = [
        {"operation": "create", "status": 429, "times": rng.randint(2, 6),
         "retry_after_ms": 100},
        {"operation": "create", "status": 429, "spend_limit": True, "times": 1},
        {"operation": "create", "status": rng.choice([500, 529]), "times": rng.randint(1, 2)},
        {"operation": "create", "status": rng.choice([500, 529]), "after_create": True},
        {"operation": "create", "delay_seconds": 3.0, "after_create": True},  # past the timeout
        {"operation": "retrieve", "status": rng.choice([429, 500, 529]),
         "times": rng.randint(2, 6)},
        {"operation": "list", "status": rng.choice([429, 500]), "times": rng.randint(1, 2)},
        {"operation": "results", "status": rng.choice([500, 529]), "times": rng.randint(1, 2)},
        {"operation": "*", "delay_seconds": 0.5, "times": rng.randint(3, 8)},  # slow answers
    ]
    rng.shuffle(rules)
    return rules


@pytest.mark.timeout(TEST_TIMEOUT)
async def test_an_api_fault_storm_loses_nothing_and_bills_once(chaos: Chaos) -> None:
    fired: Counter[str] = Counter()
    current: list[dict[str, Any]] = []

    def count_fired() -> None:
        remaining = chaos.emulator.state.stats()["faults_remaining"]
        for rule, left in zip(current, remaining, strict=True):
            fired[_fault_name(rule)] += rule.get("times", 1) - left

    async def blow(n: int) -> str:
        count_fired()
        current[:] = storm(chaos.rng)
        chaos.emulator.configure(faults=current)
        return "storm"

    try:
        await chaos.run(blow, rounds=ROUNDS)
        count_fired()
    finally:
        chaos.emulator.configure(faults=[])
    print(f"API faults fired: {sum(fired.values())} {dict(sorted(fired.items()))}")
    assert sum(fired.values()) > 0, "the storm never reached the API"


def _fault_name(rule: dict[str, Any]) -> str:
    kind = "after_create" if rule.get("after_create") else \
        "spend_limit" if rule.get("spend_limit") else str(rule.get("status") or "slow")
    return f"{rule['operation']} {kind}"
