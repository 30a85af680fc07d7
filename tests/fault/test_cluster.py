"""A 3-node NATS cluster with R3 streams and buckets: losing the tasks stream's leader, and
then a second node (no quorum for a while), loses no task, stores no second result and pays
for no task attempt twice."""

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import nats
import pytest

from emulator.server import EmulatorHandle
from launcher.nats_cluster import NatsCluster, start_cluster
from launcher.services import Pipeline
from shared import subjects
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
OUTAGE_SECONDS = 3.0  # how long the second node stays down: the cluster has no quorum meanwhile


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
        first.kill()  # mid-run: batches in flight, and the next wave is published meanwhile
        publishing = asyncio.create_task(recorder.publish_all(waves[1]))
        second = await cluster.wait_stream_leader(js, subjects.STREAM_TASKS, 30, other_than=first)
        await asyncio.wait_for(publishing, 60)
        created = len(emulator.state.creates())
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
        await _dump(url, tenant)
    assert verdict.violations == {}
    assert results_in, "not every task got a result in time"
    assert quiet, "batchbus still had work in flight 30 s after the last result"
    assert verdict.acked == verdict.tasks == TASKS
    assert verdict.statuses == {"succeeded": TASKS}


async def _until(condition: Callable[[], bool], timeout: float, failure: str) -> None:
    """Polls `condition` until it holds; fails with `failure` after `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not condition():  # noqa: ASYNC110 - polls the emulator's state
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(failure)


async def _dump(url: str, tenant: str = "") -> None:  # TEMP debug
    from shared.settings import NatsSettings
    from shared.streams import batch_records
    nc = await nats.connect(url)
    js = nc.jetstream()
    for stream, durable in [(subjects.STREAM_TASKS, subjects.DURABLE_INTAKE),
                            (subjects.STREAM_INTERNAL, subjects.DURABLE_BATCHER),
                            (subjects.STREAM_INTERNAL, subjects.DURABLE_NOTIFIER)]:
        info = await js.consumer_info(stream, durable)
        print("DUMP", durable, info.num_pending, info.num_ack_pending, info.num_redelivered,
              info.delivered, info.ack_floor, info.cluster)
    for stream, subject in [(subjects.STREAM_TASKS, subjects.tasks(tenant)),
                            (subjects.STREAM_INTERNAL, subjects.accepted(tenant))]:
        info = await js.stream_info(stream, subjects_filter=subject)
        print("DUMP stream", stream, info.state.subjects, info.state, info.cluster)
    kv = await js.key_value(subjects.KV_TASK_IDS)
    keys = [k for k in await kv.keys() if k.startswith(tenant)]
    print("DUMP task_ids keys", len(keys))
    records = await batch_records(js, NatsSettings(url=""))
    for r in await records.all():
        print("DUMP record", r)
    await nc.close()
