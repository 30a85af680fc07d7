"""A real Prometheus scrapes the four services through a run: every dashboard query and alert
expression is valid on it, the money it reports is the money in the published results, and no
label carries a per-task or per-batch value. Also /readyz.

Prometheus is Debian's `prometheus` binary (`make tools`), on a free loopback port.
"""

import asyncio
import json
import math
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from batchbus.client import BatchbusClient
from batchbus.launcher.nats_server import NatsServer
from batchbus.launcher.services import SERVICES, Pipeline, free_port
from batchbus.services.batcher.metrics import BatcherMetrics
from batchbus.services.intake.metrics import IntakeMetrics
from batchbus.services.notifier.metrics import NotifierMetrics
from batchbus.services.poller.metrics import PollerMetrics
from batchbus.shared.app import Readiness
from batchbus.shared.models import Result
from tests.integration.helpers import MODEL, gather_results, ticket
from tests.unit.test_monitoring_files import (
    ALERTS,
    alert_rules,
    all_queries,
    as_prometheus_query,
    metric_names,
    tool,
)

T = TypeVar("T")
TASKS = 200
METRICS_OF = {"intake": IntakeMetrics, "batcher": BatcherMetrics, "poller": PollerMetrics,
              "notifier": NotifierMetrics}
# As the `tenant` fixture, which is per test; a budget makes intake reserve and the notifier
# settle, so the budget panels have data.
TENANT = "mon" + uuid.uuid4().hex[:12]


@pytest.fixture(scope="module")
def pipeline_overrides() -> dict[str, str]:
    return {"INTAKE_BUDGETS": f"{TENANT}=100"}
# Metrics a run without API faults or firing alerts leaves without any series.
MAY_BE_EMPTY = {"batchbus_api_errors_total", "ALERTS", "batchbus_loop_restarts_total"}
# No label may take more values than this on one metric.
MAX_LABEL_VALUES = 20


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]

    def api(self, path: str, **params: str) -> dict[str, Any]:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=5) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:  # a bad query answers 400 with a JSON body
            body = json.load(error)
        assert isinstance(body, dict)
        return body

    def query(self, expr: str) -> dict[str, Any]:
        return self.api("/api/v1/query", query=expr)

    def value(self, expr: str) -> float | None:
        """The value of a query that yields at most one sample."""
        body = self.query(expr)
        assert body["status"] == "success", (expr, body)
        samples = body["data"]["result"]
        assert len(samples) <= 1, (expr, samples)
        return float(samples[0]["value"][1]) if samples else None


def wait_for(condition: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    """Polls `condition` until it returns something other than None or False."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (outcome := condition()) not in (None, False):
            return outcome  # type: ignore[return-value]
        time.sleep(0.2)  # poll interval; the bound is `timeout`
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def prometheus_config(pipeline: Pipeline) -> str:
    """The compose config's jobs and rules, with static loopback targets and 1 s cadence."""
    jobs = [{"job_name": name,
             "static_configs": [{"targets": [f"127.0.0.1:{pipeline.services[name].port}"]}]}
            for name in SERVICES]
    return json.dumps({  # JSON is YAML
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": jobs,
    })


@pytest.fixture(scope="module")
def prometheus(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    binary = tool("prometheus")
    workdir = tmp_path_factory.mktemp("prometheus")
    (workdir / "prometheus.yml").write_text(prometheus_config(pipeline))
    port = free_port()
    with open(workdir / "prometheus.log", "wb") as log:
        process = subprocess.Popen(
            [binary, f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
             "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT)
    server = Prometheus(f"http://127.0.0.1:{port}", process)
    try:
        wait_for(lambda: _ready(server), "Prometheus to be ready")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    assert process.poll() is not None


def _ready(server: Prometheus) -> bool:
    if server.process.poll() is not None:
        raise AssertionError(f"prometheus exited with {server.process.returncode}; see its log")
    try:
        with urllib.request.urlopen(f"{server.url}/-/ready", timeout=1):
            return True
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def all_up(server: Prometheus) -> dict[str, float] | None:
    samples = server.query("up")["data"]["result"]
    up = {s["metric"]["job"]: float(s["value"][1]) for s in samples}
    return up if len(up) == len(SERVICES) and all(v == 1 for v in up.values()) else None


@dataclass
class Run:
    results: list[Result]
    baseline: dict[str, float]
    tenant: str


MONEY = ("batchbus_cost_batch_usd_total", "batchbus_cost_realtime_usd_total",
         "batchbus_cost_saved_usd_total")
TOKENS = {"input": "input_tokens", "output": "output_tokens",
          "cache_write": "cache_creation_input_tokens", "cache_read": "cache_read_input_tokens"}


def totals(server: Prometheus) -> dict[str, float]:
    """Counters summed over the four services, as Prometheus last scraped them."""
    exprs = {name: f"sum({name})" for name in (*MONEY, "batchbus_results_total")}
    exprs |= {kind: f'sum(batchbus_tokens_total{{kind="{kind}"}})' for kind in TOKENS}
    return {key: server.value(expr) or 0.0 for key, expr in exprs.items()}


async def publish_workload(nats_url: str, tenant: str) -> list[Result]:
    """200 tasks, one that fails once and is retried, one on the real-time route, one
    duplicate and one rejected."""
    flaky = ticket(TASKS, metadata={"user_id": "emulate:errored:overloaded_error:first=1"})
    urgent = {**ticket(TASKS + 1), "route": "realtime"}
    invalid = {"task_id": "broken-1", "params": {"model": MODEL, "messages": []}}
    async with BatchbusClient(nats_url, tenant) as client:
        await client.publish_many([*(ticket(i) for i in range(TASKS)), flaky, urgent])
        await client.publish(ticket(0))
        await client.publish(invalid)
        by_task = await gather_results(client, TASKS + 3)
    assert all(len(results) == 1 for results in by_task.values())
    return [results[0] for results in by_task.values()]


@pytest.fixture(scope="module")
def run(prometheus: Prometheus, nats_server: NatsServer) -> Run:
    """The workload, once Prometheus sees the idle services, and until it sees every result."""
    wait_for(lambda: all_up(prometheus), "Prometheus to scrape all four services")
    baseline = totals(prometheus)
    tenant = TENANT
    results = asyncio.run(publish_workload(nats_server.url, tenant))
    # Each service counts a result right after publishing it, money in the same step.
    expected = baseline["batchbus_results_total"] + len(results)
    wait_for(lambda: totals(prometheus)["batchbus_results_total"] == expected,
             f"Prometheus to count {len(results)} more results")
    # Rules are evaluated every second; wait until each has been at least once.
    wait_for(lambda: all(r["health"] != "unknown" for r in rules(prometheus)),
             "every alert rule to be evaluated")
    return Run(results, baseline, tenant)


def rules(server: Prometheus) -> list[dict[str, Any]]:
    body = server.api("/api/v1/rules", type="alert")
    return [rule for group in body["data"]["groups"] for rule in group["rules"]]


@pytest.mark.nats
def test_every_dashboard_and_alert_query_is_valid(prometheus: Prometheus, run: Run) -> None:
    empty = []
    for where, expr in all_queries().items():
        body = prometheus.query(as_prometheus_query(expr))
        assert body["status"] == "success", f"{where}: {body.get('error')}"
        if where.startswith("panel") and not body["data"]["result"]:
            empty.append((where, expr))
    # After a run, a panel shows nothing only where nothing can have happened.
    assert [(w, e) for w, e in empty if not metric_names(e) <= MAY_BE_EMPTY] == []


@pytest.mark.nats
def test_every_alert_rule_is_loaded_and_evaluates(prometheus: Prometheus, run: Run) -> None:
    loaded = rules(prometheus)
    assert {rule["name"] for rule in loaded} == {rule["alert"] for rule in alert_rules()}
    assert [(r["name"], r.get("lastError")) for r in loaded if r["health"] != "ok"] == []


@pytest.mark.nats
def test_the_money_is_the_money_in_the_results(prometheus: Prometheus, run: Run) -> None:
    priced = [result.cost for result in run.results if result.cost is not None]
    assert len(priced) == TASKS + 2  # everything but the rejected task
    published = {MONEY[0]: math.fsum(c.batch_usd for c in priced),
                 MONEY[1]: math.fsum(c.realtime_usd for c in priced),
                 MONEY[2]: math.fsum(c.saved_usd for c in priced)}
    published |= {kind: float(sum(getattr(r.usage, field) for r in run.results if r.usage))
                  for kind, field in TOKENS.items()}
    scraped = totals(prometheus)
    for key, value in published.items():
        assert scraped[key] - run.baseline[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert published[MONEY[0]] > 0


@pytest.mark.nats
def test_prometheus_sees_all_four_services_up(prometheus: Prometheus, run: Run) -> None:
    assert all_up(prometheus) == dict.fromkeys(SERVICES, 1.0)


@pytest.mark.nats
def test_no_label_has_a_value_per_task_or_per_batch(pipeline: Pipeline, run: Run) -> None:
    per_item = re.compile(rf"{run.tenant}|ticket-|broken-|msgbatch_|[a-z2-7]{{26,}}-a\d")
    for name, service in pipeline.services.items():
        with urllib.request.urlopen(service.metrics_url, timeout=5) as response:
            text = response.read().decode()
        values: dict[tuple[str, str], set[str]] = defaultdict(set)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                for label, value in sample.labels.items():
                    assert not per_item.search(value), f"{name}: {sample.name}{{{label}={value!r}}}"
                    values[sample.name, label].add(value)
        wide = {key: len(v) for key, v in values.items() if len(v) > MAX_LABEL_VALUES}
        assert wide == {}, f"{name}: labels with many values"


@pytest.mark.nats
def test_each_service_exposes_only_its_own_series(pipeline: Pipeline, run: Run) -> None:
    """batchbus_* series of a service are those its metrics class declares (no other service's
    stuck at zero); besides them only the process and runtime series."""
    for name, service in pipeline.services.items():
        own = {family.name for family in METRICS_OF[name]().registry.collect()
               if family.name.startswith("batchbus_")}
        with urllib.request.urlopen(service.metrics_url, timeout=5) as response:
            exposed = {f.name for f in text_string_to_metric_families(response.read().decode())}
        # The text format's `<name>_created` samples read back as families of their own.
        ours = {n.removesuffix("_created") if n.removesuffix("_created") in own else n
                for n in exposed if n.startswith("batchbus_")}
        assert ours == own, name
        others = {n for n in exposed if not n.startswith("batchbus_")}
        assert others and all(n.startswith(("process_", "python_")) for n in others), others


@pytest.mark.nats
def test_every_service_is_ready(pipeline: Pipeline) -> None:
    for service in pipeline.services.values():
        with urllib.request.urlopen(f"http://127.0.0.1:{service.port}/readyz", timeout=5) as r:
            assert r.status == 204


class FakeBroker:
    def __init__(self, connected: bool) -> None:
        self.connected = connected

    async def ping(self, timeout: float | None) -> bool:
        return self.connected


async def test_readiness_needs_startup_nats_and_every_extra_check() -> None:
    async def ok() -> bool:
        return True

    async def down() -> bool:
        return False

    async def broken() -> bool:
        raise RuntimeError("no route to the API")

    async def hanging() -> bool:
        await asyncio.Event().wait()
        return True

    readiness = Readiness(timeout=0.2)
    broker: Any = FakeBroker(connected=True)
    assert await readiness.failures(broker) == ["startup"]
    readiness.started = True
    assert await readiness.failures(broker) == []
    assert await readiness.failures(FakeBroker(connected=False)) == ["nats"]  # type: ignore[arg-type]
    for name, check in {"api": ok, "kv": down, "db": broken, "slow": hanging}.items():
        readiness.add(name, check)
    assert await readiness.failures(broker) == ["kv", "db", "slow"]
