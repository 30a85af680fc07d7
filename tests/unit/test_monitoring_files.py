"""monitoring/: Prometheus config and alert rules pass promtool; the Grafana dashboard and its
provisioning agree with each other, with docker-compose.yml and with the metrics the code defines.

promtool comes from Debian's `prometheus` package (`make tools`, run by `make test`).
"""

import json
import os
import re
import runpy
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from batchbus.services.batcher.metrics import BatcherMetrics
from batchbus.services.intake.metrics import IntakeMetrics
from batchbus.services.notifier.metrics import NotifierMetrics
from batchbus.services.poller.metrics import PollerMetrics

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
PROMETHEUS_DIR = MONITORING / "prometheus"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERT_TESTS = PROMETHEUS_DIR / "alerts_test.yml"
GRAFANA = MONITORING / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "batchbus.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "batchbus.yml"
COMPOSE = ROOT / "docker-compose.yml"

# Series Prometheus makes itself rather than scrapes.
PROMETHEUS_SERIES = {"up", "ALERTS"}
# Grafana's built-in variables, as a plain Prometheus query needs them.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h"}
# A label with one value per task, batch or tenant would give one series each.
PER_ITEM_LABELS = {"task_id", "batch_id", "custom_id", "tenant", "destination", "intent_id"}
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                   "unless", "bool", "offset", "inf", "nan"}


def load_yaml(path: Path) -> Any:
    return YAML(typ="safe", pure=True).load(path.read_text())


def tool(name: str) -> str:
    """A binary from Debian's prometheus package; missing fails on CI and skips elsewhere."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not on PATH: run `make tools` (Debian's prometheus package)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def panels() -> Iterator[dict[str, Any]]:
    """Every panel but the rows, including panels folded inside a collapsed row."""
    for panel in dashboard()["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def dashboard_queries() -> list[str]:
    return [target["expr"] for panel in panels() for target in panel["targets"]]


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def as_prometheus_query(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def all_queries() -> dict[str, str]:
    """Every PromQL expression in monitoring/, by where it comes from."""
    queries = {f"alert {rule['alert']}": rule["expr"] for rule in alert_rules()}
    queries |= {f"panel {panel['title']!r} {target['refId']}": target["expr"]
                for panel in panels() for target in panel["targets"]}
    return queries


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (not its functions or label names)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range windows
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", expr):
        if match[2] is None and match[1] not in PROMQL_KEYWORDS:
            names.add(match[1])
    return names


def grouping_labels(expr: str) -> set[str]:
    return {label.strip() for clause in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr)
            for label in clause.split(",") if label.strip()}


SERVICE_METRICS = (IntakeMetrics, BatcherMetrics, PollerMetrics, NotifierMetrics)

@cache
def exposed_names() -> frozenset[str]:
    """Every batchbus_* series name one of the four services can expose."""
    suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}
    return frozenset(family.name + suffix for metrics in SERVICE_METRICS
                     for family in metrics().registry.collect()
                     for suffix in suffixes[family.type])


def promtool(*args: str, cwd: Path = ROOT) -> None:
    done = subprocess.run([tool("promtool"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_accepts_the_prometheus_config() -> None:
    promtool("check", "config", str(CONFIG))  # loads alerts.yml through rule_files as well


def test_promtool_accepts_the_alert_rules() -> None:
    promtool("check", "rules", str(ALERTS))


def test_alerts_fire_when_and_as_their_unit_tests_expect() -> None:
    promtool("test", "rules", ALERT_TESTS.name, cwd=PROMETHEUS_DIR)


def test_compose_prometheus_scrapes_the_four_services_and_loads_the_rules() -> None:
    config = load_yaml(CONFIG)
    assert config["rule_files"] == [ALERTS.name]
    ports = {job["job_name"]: job["dns_sd_configs"][0]["port"]
             for job in config["scrape_configs"] if "dns_sd_configs" in job}
    assert ports == {"intake": 9101, "batcher": 9102, "poller": 9103, "notifier": 9104}


def test_every_alert_has_a_duration_a_severity_and_a_description() -> None:
    rules = alert_rules()
    assert len({rule["alert"] for rule in rules}) == len(rules)
    for rule in rules:
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_the_alerts_cover_what_the_issue_asks_for() -> None:
    exprs = " ".join(rule["expr"] for rule in alert_rules())
    for needed in ("up{", "batchbus_oldest_pending_age_seconds", "batchbus_oldest_batch_age_seconds",
                   "batchbus_dead_letters_total", "batchbus_api_errors_total"):
        assert needed in exprs


def test_every_query_names_only_metrics_the_services_expose() -> None:
    known = exposed_names() | PROMETHEUS_SERIES
    for where, expr in all_queries().items():
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        assert names <= known, f"{where}: unknown {sorted(names - known)} in {expr!r}"


def test_no_query_groups_by_a_per_task_or_per_batch_label() -> None:
    for where, expr in all_queries().items():
        assert not grouping_labels(expr) & PER_ITEM_LABELS, f"{where}: {expr!r}"


def test_metric_name_parsing() -> None:
    expr = ('histogram_quantile(0.95, sum by (app_name, le) (rate(x_bucket{a="b(c)"}[$__rate_interval])))'
            ' / on (job) group_left (d) y > 20 * 3600 and absent(up{job="intake"}) or ALERTS')
    assert metric_names(expr) == {"x_bucket", "y", "up", "ALERTS"}
    assert grouping_labels(expr) == {"app_name", "le"}


def test_the_dashboard_is_what_its_builder_writes() -> None:
    builder = runpy.run_path(str(GRAFANA / "build_dashboard.py"))
    assert DASHBOARD.read_text() == builder["render"](), (
        "run `python monitoring/grafana/build_dashboard.py` and commit the JSON")


def test_every_panel_queries_the_provisioned_datasource() -> None:
    (source,) = load_yaml(DATASOURCES)["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    expected = {"type": "prometheus", "uid": source["uid"]}
    for panel in panels():
        assert panel["datasource"] == expected, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == expected, panel["title"]


def test_rate_windows_follow_the_scrape_interval() -> None:
    (source,) = load_yaml(DATASOURCES)["datasources"]
    assert source["jsonData"]["timeInterval"] == load_yaml(CONFIG)["global"]["scrape_interval"]


def test_panels_are_uniquely_numbered_and_fit_the_grid() -> None:
    ids = [panel["id"] for panel in dashboard()["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard()["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]


def test_the_dashboard_has_the_rows_and_the_money() -> None:
    rows = [panel["title"] for panel in dashboard()["panels"] if panel["type"] == "row"]
    assert {"Money", "Throughput", "Queue", "Batches", "Errors", "Latency"} <= set(rows)
    queries = " ".join(dashboard_queries())
    for metric in ("batchbus_cost_batch_usd_total", "batchbus_cost_realtime_usd_total",
                   "batchbus_cost_saved_usd_total", "batchbus_tokens_total",
                   "batchbus_task_latency_seconds_bucket"):
        assert metric in queries


def test_grafana_loads_the_dashboards_where_compose_mounts_them() -> None:
    (provider,) = load_yaml(PROVIDERS)["providers"]
    assert provider["type"] == "file"
    volumes = load_yaml(COMPOSE)["services"]["grafana"]["volumes"]
    assert f"./monitoring/grafana/dashboards:{provider['options']['path']}:ro" in volumes
