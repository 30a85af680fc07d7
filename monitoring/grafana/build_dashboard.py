"""Writes dashboards/batchbus.json, the Grafana dashboard: `python monitoring/grafana/build_dashboard.py`.

The panels are kept here rather than as hand-edited JSON so that every query, unit and
datasource is visible in one screen; tests/unit/test_monitoring_files.py checks that the
committed JSON is what this script writes and that every query names real metrics.
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "prometheus"}  # provisioning/datasources/prometheus.yml
OUTPUT = Path(__file__).resolve().parent / "dashboards" / "batchbus.json"
R = "$__rate_interval"  # Grafana's rate window: at least four scrape intervals
SERVICES = 'job=~"intake|batcher|poller|notifier"'


@dataclass
class Panel:
    title: str
    queries: list[tuple[str, str]]  # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"  # or "stat", "table"
    width: int = 8
    height: int = 8
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Row:
    title: str
    panels: list[Panel]


def rate(metric: str, by: str = "", per: int = 1) -> str:
    """Per-second rate summed over replicas (`per`=60 for a per-minute figure)."""
    grouping = f" by ({by})" if by else ""
    scaled = f" * {per}" if per != 1 else ""
    return f"sum{grouping} (rate({metric}[{R}])){scaled}"


def quantile(q: float, histogram: str) -> str:
    return f"histogram_quantile({q}, sum by (le) (rate({histogram}_bucket[{R}])))"


def mean(histogram: str) -> str:
    return f"sum(rate({histogram}_sum[{R}])) / sum(rate({histogram}_count[{R}]))"


def in_range(metric: str) -> str:
    """How much a counter grew over the dashboard's time range, restarts included."""
    return f"sum(increase({metric}[$__range]))"


def stat(title: str, expr: str, unit: str, description: str, width: int = 4) -> Panel:
    return Panel(title, [(expr, "")], unit, "stat", width, 5, description)


def sizes(title: str, histogram: str, unit: str, description: str) -> Panel:
    return Panel(title, [(quantile(0.5, histogram), "p50"), (quantile(0.95, histogram), "p95"),
                         (mean(histogram), "mean")], unit, description=description)


USD = "currencyUSD"
COST = ("batchbus_cost_batch_usd_total", "batchbus_cost_realtime_usd_total",
        "batchbus_cost_saved_usd_total")

ROWS = [
    Row("Money", [
        stat("Spent", in_range(COST[0]), USD, "Cost of the results delivered in the time "
             "range, at batch prices."),
        stat("Would have spent", in_range(COST[1]), USD, "The same results at real-time "
             "(Messages API) prices."),
        stat("Saved", in_range(COST[2]), USD, "Would have spent minus spent."),
        stat("Saved share", f"{in_range(COST[2])} / {in_range(COST[1])}", "percentunit",
             "Saved as a share of what real-time calls would have cost."),
        stat("Results without a price", in_range("batchbus_unknown_model_results_total"),
             "short", "Results whose model is missing from the price table: their cost is "
             "not in the figures on the left."),
        stat("Dead letters", in_range("batchbus_dead_letters_total"), "short",
             "Task attempts given up on in the time range."),
        Panel("USD per hour", [(rate(COST[0], per=3600), "spent"),
                               (rate(COST[1], per=3600), "would have spent"),
                               (rate(COST[2], per=3600), "saved")], USD, width=12),
        Panel("Tokens per second by kind and model",
              [(rate("batchbus_tokens_total", "model, kind"), "{{model}} {{kind}}")],
              width=12, description="kind: input, output, cache_write, cache_read."),
    ]),
    Row("Health", [
        Panel("Replicas up", [(f"sum by (job) (up{{{SERVICES}}})", "{{job}}")], kind="stat",
              width=8, height=5, description="Scraped replicas answering, per service."),
        Panel("Firing alerts",
              [('sum by (alertname, severity) (ALERTS{alertstate="firing"})', "")],
              kind="table", width=16, height=5,
              description="From monitoring/prometheus/alerts.yml."),
        Panel("Service loops restarted after an error",
              [(rate("batchbus_loop_restarts_total", "job, loop"), "{{job}} {{loop}}")], "ops",
              width=24, description="Each service's consumer and polling loops restart on an "
              "unexpected error instead of stopping; any rate here is worth a look in the logs."),
    ]),
    Row("Throughput", [
        Panel("Tasks in", [(rate("batchbus_tasks_received_total"), "received"),
                           (rate("batchbus_tasks_accepted_total"), "accepted"),
                           (rate("batchbus_tasks_deduplicated_total"), "deduplicated")], "ops"),
        Panel("Tasks rejected by reason",
              [(rate("batchbus_tasks_rejected_total", "reason"), "{{reason}}")], "ops"),
        Panel("Final results by status",
              [(rate("batchbus_results_total", "status"), "{{status}}")], "ops"),
    ]),
    Row("Queue", [
        Panel("Tasks pending in the batcher", [("sum(batchbus_pending_tasks)", "pending")],
              description="Task attempts held by the batchers, waiting for a flush."),
        Panel("Oldest pending task", [("max(batchbus_oldest_pending_age_seconds)", "age")], "s",
              description="A flush is due BATCHER_MAX_WAIT_SECONDS after the oldest task."),
        Panel("Flushes per minute by reason",
              [(rate("batchbus_batch_flushes_total", "reason", per=60), "{{reason}}")],
              description="count, bytes or time: which limit closed each batch."),
    ]),
    Row("Batches", [
        Panel("Batches submitted per minute",
              [(rate("batchbus_batches_submitted_total", per=60), "submitted"),
               (rate("batchbus_poll_calls_total", per=60), "poll calls")]),
        Panel("Batches by state", [("max by (state) (batchbus_batch_records)", "{{state}}"),
                                   ("max(batchbus_batches_in_flight)", "in flight")],
              description="From the KV bucket `batches`, which every poller replica reads "
              "whole: max(), not sum()."),
        Panel("Oldest batch in flight", [("max(batchbus_oldest_batch_age_seconds)", "age")],
              "s", description="Most batches end within an hour; the API expires them at 24 h."),
        sizes("Batch size (requests)", "batchbus_batch_requests", "short",
              "Requests per submitted batch."),
        sizes("Batch size (bytes)", "batchbus_batch_bytes", "decbytes",
              "Request body bytes per submitted batch."),
        sizes("Batch completion time", "batchbus_batch_completion_seconds", "s",
              "From the create to the API's ended_at."),
    ]),
    Row("Errors", [
        Panel("API errors per minute by operation and status",
              [(rate("batchbus_api_errors_total", "operation, status_code", per=60),
                "{{operation}} {{status_code}}")]),
        Panel("Retries per minute by reason",
              [(rate("batchbus_retries_total", "reason", per=60), "{{reason}}")],
              description="Task attempts sent back for another batch."),
        Panel("Dead letters and create outcomes per minute",
              [(rate("batchbus_dead_letters_total", per=60), "dead letters"),
               (rate("batchbus_batch_create_outcomes_total", "outcome", per=60), "{{outcome}}")],
              description="Outcomes: created, refused, adopted (a create in doubt found "
              "among the API's batches), not_created, ambiguous, withdrawn (a paused batcher "
              "let go of tasks that may no longer be its own)."),
    ]),
    Row("Routes, budgets and webhooks", [
        Panel("Accepted tasks by route and reason",
              [(rate("batchbus_route_decisions_total", "route, reason"), "{{route}} {{reason}}")],
              "ops", description="realtime: asked for, or a deadline nearer than the batch "
              "path's estimate (below)."),
        Panel("Batch path estimate", [("max(batchbus_batch_path_estimate_seconds)", "estimate")],
              "s", description="Intake's estimate of task to batch result; deadlines closer "
              "than this go real-time."),
        Panel("Real-time calls by outcome",
              [(rate("batchbus_realtime_calls_total", "outcome"), "{{outcome}}")], "ops"),
        Panel("Budget reservations and settlements",
              [(rate("batchbus_budget_reservations_total", "outcome"), "reserve {{outcome}}"),
               (rate("batchbus_budget_settlements_total", "outcome"), "settle {{outcome}}")],
              "ops"),
        Panel("Payload bytes by service and operation",
              [(rate("batchbus_payload_bytes_total", "job, operation"), "{{job}} {{operation}}")],
              "Bps", description="Params and answers too large for one NATS message, in the "
              "tenants' payload buckets: stored, read back and deleted (docs/payloads.md)."),
        Panel("Webhook deliveries by outcome",
              [(rate("batchbus_webhook_deliveries_total", "outcome"), "{{outcome}}")], "ops",
              description="failed: given up after the last attempt, recorded on "
              "batchbus.deadletters.webhooks.<tenant>."),
    ]),
    Row("Latency", [
        Panel("End-to-end task latency",
              [(quantile(0.5, "batchbus_task_latency_seconds"), "p50"),
               (quantile(0.9, "batchbus_task_latency_seconds"), "p90"),
               (quantile(0.99, "batchbus_task_latency_seconds"), "p99"),
               (mean("batchbus_task_latency_seconds"), "mean")], "s", width=16,
              description="From the task's publish to its final result."),
        stat("Median latency in range", "histogram_quantile(0.5, sum by (le) (increase("
             "batchbus_task_latency_seconds_bucket[$__range])))", "s",
             "Over the whole time range.", width=8),
    ]),
]


def _panel(panel: Panel, ident: int, x: int, y: int) -> dict[str, Any]:
    instant = panel.kind != "timeseries"
    targets = [{"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr,
                "legendFormat": legend or "__auto", "range": not instant, "instant": instant,
                **({"format": "table"} if panel.kind == "table" else {})}
               for i, (expr, legend) in enumerate(panel.queries)]
    options: dict[str, Any] = {
        "timeseries": {"legend": {"displayMode": "list", "placement": "bottom",
                                  "showLegend": True},
                       "tooltip": {"mode": "multi", "sort": "desc"}},
        "stat": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                 "colorMode": "value", "graphMode": "none", "textMode": "auto",
                 "justifyMode": "auto", "orientation": "auto"},
        "table": {"showHeader": True},
    }[panel.kind]
    return {"id": ident, "type": panel.kind, "title": panel.title,
            "description": panel.description, "datasource": DATASOURCE,
            "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
            "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
            "options": {**options, **panel.options}, "targets": targets}


def build() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    for row in ROWS:
        panels.append({"id": len(panels) + 1, "type": "row", "title": row.title,
                       "collapsed": False, "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                       "panels": []})
        y, x, line = y + 1, 0, 0
        for panel in row.panels:
            if x + panel.width > 24:
                y, x, line = y + line, 0, 0
            panels.append(_panel(panel, len(panels) + 1, x, y))
            x, line = x + panel.width, max(line, panel.height)
        y += line
    return {
        "uid": "batchbus", "title": "batchbus", "tags": ["batchbus"],
        "description": "Tasks, batches, errors, latency and the money batching saves.",
        "editable": True, "graphTooltip": 1, "schemaVersion": 39, "version": 1,
        "time": {"from": "now-6h", "to": "now"}, "refresh": "30s", "timezone": "browser",
        "templating": {"list": []}, "annotations": {"list": []}, "links": [],
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    OUTPUT.write_text(render())
    sys.stdout.write(f"wrote {OUTPUT}\n")
