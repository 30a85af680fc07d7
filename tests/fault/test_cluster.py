"""A 3-node NATS cluster with R3 streams and buckets (the settings of docs/production.md):
losing the tasks stream's leader and then a second node (no quorum for a while), or pausing a
node, loses no task, stores no second result and pays for no task attempt twice."""

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import nats
import pytest

from batchbus.emulator.server import EmulatorHandle
from batchbus.launcher.nats_cluster import NatsCluster, start_cluster
from batchbus.launcher.services import Pipeline
from batchbus.shared import subjects
from batchbus.shared.settings import NatsSettings
from batchbus.shared.streams import batch_records
from tests.conftest import pipeline_env
from tests.fault.conftest import FAST_RECOVERY
from tests.fault.history import (
    History,
    Recorder,
    check,
    record,
    wait_for_results,
    wait_until_quiet,
)
from tests.integration.helpers import ticket

pytestmark = [pytest.mark.nats, pytest.mark.fault, pytest.mark.slow]

TASKS = int(os.environ.get("BATCHBUS_CLUSTER_TASKS", "3000"))
PAUSE_TASKS = 1000
# How long the second node stays down: the cluster has no quorum meanwhile.
OUTAGE_SECONDS = float(os.environ.get("BATCHBUS_CLUSTER_OUTAGE_SECONDS", "3"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    running = start_cluster(str(tmp_path_factory.mktemp("cluster")))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def cluster_pipeline(cluster: NatsCluster, emulator: EmulatorHandle,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """The four services with NATS_URL listing every node and R3 streams and buckets."""
    log_dir = Path(os.environ.get("BATCHBUS_TEST_LOGS") or tmp_path_factory.mktemp("logs"))
    env = pipeline_env(cluster.url, emulator.url, NATS_REPLICAS="3", **FAST_RECOVERY)
    running = Pipeline(env, log_dir).start()
    yield running
    running.stop()


async def test_every_stream_bucket_and_object_store_has_three_replicas(
        cluster: NatsCluster, cluster_pipeline: Pipeline) -> None:
    nc = await nats.connect(cluster.url.split(","))
    try:
        infos = await nc.jetstream().streams_info()
    finally:
        await nc.close()
    names = {info.config.name for info in infos}
    assert {subjects.STREAM_TASKS, f"KV_{subjects.KV_TASK_IDS}",
            f"OBJ_{subjects.OBJ_MANIFESTS}"} <= names
    assert {i.config.name: i.config.num_replicas for i in infos} == dict.fromkeys(names, 3)


@pytest.mark.timeout(180 + TASKS // 50)
async def test_killing_the_tasks_leader_then_a_second_node_keeps_every_promise(
        cluster: NatsCluster, cluster_pipeline: Pipeline, emulator: EmulatorHandle,
        tenant: str) -> None:
    history = History(tenant)
    tasks = [ticket(i) for i in range(TASKS)]
    waves = [tasks[i * TASKS // 3:(i + 1) * TASKS // 3] for i in range(3)]  # one per phase
    before = len(emulator.state.creates())
    nc = await nats.connect(cluster.url.split(","), max_reconnect_attempts=-1)
    js = nc.jetstream()
    recorder = Recorder(nc, history)
    publishing: asyncio.Task[None] | None = None
    try:
        await recorder.publish_all(waves[0])
        await _until(lambda: len(emulator.state.creates()) > before, 60, "no batch created")

        first = await cluster.wait_stream_leader(js, subjects.STREAM_TASKS, 10)
        # Counted before the kill: the second wave's batch may be created before its last
        # publish returns.
        created = len(emulator.state.creates())
        first.kill()  # mid-run: batches in flight, and the next wave is published meanwhile
        publishing = asyncio.create_task(recorder.publish_all(waves[1]))
        second = await cluster.wait_stream_leader(js, subjects.STREAM_TASKS, 30, other_than=first)
        await asyncio.wait_for(publishing, 60)
        await _until(lambda: len(emulator.state.creates()) > created, 60,
                     "no batch created on the two surviving nodes")

        second.kill()  # one node left of three: no stream has a quorum
        publishing = asyncio.create_task(recorder.publish_all(waves[2]))
        await asyncio.sleep(OUTAGE_SECONDS)  # the fault's length, not a wait for a condition
        second.start()
        await asyncio.to_thread(second.wait_healthy, 30)
        first.start()
        await asyncio.to_thread(cluster.wait_healthy, 30)
        await asyncio.wait_for(publishing, 60)
        results_in = await wait_for_results(nc, tenant, [str(t["task_id"]) for t in tasks],
                                            90 + TASKS / 100)
    finally:
        if publishing is not None:
            publishing.cancel()
        await nc.close()
    for service in cluster_pipeline.services.values():  # each reconnected, none died
        await asyncio.to_thread(service.wait_ready, 30)
    url = cluster.nodes[0].url  # every node is back; any one answers for the cluster
    quiet = await wait_until_quiet(url, 30)
    verdict = check(await record(history, url, emulator))
    print(f"cluster run: leader {first.name} killed, then "
          f"{second.name} killed for {OUTAGE_SECONDS}s; publish attempts={len(history.publishes)} "
          f"{verdict.summary()}")
    if not quiet or verdict.violations:
        await _print_in_flight(url, tenant)
    assert verdict.violations == {}
    assert results_in, "not every task got a result in time"
    assert quiet, "batchbus still had work in flight 30 s after the last result"
    assert verdict.acked == verdict.tasks == TASKS
    assert verdict.statuses == {"succeeded": TASKS}


@pytest.mark.timeout(150)
async def test_services_leave_a_paused_node_for_the_live_ones_and_lose_nothing(
        cluster: NatsCluster, cluster_pipeline: Pipeline, emulator: EmulatorHandle,
        tenant: str) -> None:
    """A paused node (SIGSTOP, as in a long GC pause or a half-open network path) keeps its
    TCP connections open: only unanswered pings tell a client to go elsewhere."""
    history = History(tenant)
    tasks = [ticket(i) for i in range(PAUSE_TASKS)]
    services = {f"batchbus-{name}" for name in cluster_pipeline.services}
    paused = max(cluster.nodes, key=lambda n: len(services & set(n.client_names())))
    live = [n for n in cluster.nodes if n is not paused]
    nc = await nats.connect([n.url for n in live], max_reconnect_attempts=-1)
    try:
        publishing = asyncio.create_task(Recorder(nc, history).publish_all(tasks))
        paused.pause()
        try:
            await _until(lambda: services <= {name for n in live for name in n.client_names()},
                         45, f"services still on paused node {paused.name}")
        finally:
            paused.resume()
        await asyncio.to_thread(cluster.wait_healthy, 30)
        await asyncio.wait_for(publishing, 60)
        results_in = await wait_for_results(nc, tenant, [str(t["task_id"]) for t in tasks], 90)
    finally:
        publishing.cancel()
        await nc.close()
    url = live[0].url
    quiet = await wait_until_quiet(url, 30)
    verdict = check(await record(history, url, emulator))
    print(f"paused {paused.name} until the services left it: {verdict.summary()}")
    if not quiet or verdict.violations:
        await _print_in_flight(url, tenant)
    assert verdict.violations == {}
    assert results_in, "not every task got a result in time"
    assert quiet, "batchbus still had work in flight 30 s after the last result"
    assert verdict.statuses == {"succeeded": PAUSE_TASKS}


async def _until(condition: Callable[[], bool], timeout: float, failure: str) -> None:
    """Polls `condition` until it holds; fails with `failure` after `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not condition():  # noqa: ASYNC110 - polls the emulator or the nodes' /connz
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(failure)


async def _print_in_flight(url: str, tenant: str) -> None:
    """What is still in flight, printed when a run fails, to tell where tasks stopped."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for stream, durable in [(subjects.STREAM_TASKS, subjects.DURABLE_INTAKE),
                                (subjects.STREAM_INTERNAL, subjects.DURABLE_BATCHER),
                                (subjects.STREAM_INTERNAL, subjects.DURABLE_NOTIFIER)]:
            info = await js.consumer_info(stream, durable)
            print(f"consumer {durable}: pending={info.num_pending} "
                  f"ack_pending={info.num_ack_pending} redelivered={info.num_redelivered}")
        for stream, subject in [(subjects.STREAM_TASKS, subjects.tasks(tenant)),
                                (subjects.STREAM_INTERNAL, subjects.accepted(tenant))]:
            info = await js.stream_info(stream, subjects_filter=subject)
            print(f"stream {stream}: {sum((info.state.subjects or {}).values())} on {subject}")
        records = await batch_records(js, NatsSettings(url=""))
        print(f"batch records open: {[(r.intent_id, r.state) for r in await records.all()]}")
    finally:
        await nc.close()
