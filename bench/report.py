"""Runs the six benchmarks several times and writes docs/benchmarks.md with their medians.

    .venv/bin/python -m bench.report [--runs 3] [--only throughput-20k ...] [--out FILE]

The figures of every run are kept in docs/benchmarks.json: `--only` reruns some benchmarks
and keeps the others' figures in the report.

Each run is a fresh process (`python -m bench.<module>`) that prints one BENCH-FIGURES
line; the table gives the median of each figure and its range over the runs. The machine
is shared, so the load average around each run is recorded too. Everything below the notes
marker of an existing report is kept: that is where what limits the figures is written.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from batchbus.launcher.nats_server import server_binary
from bench.common import FIGURES

ROOT = Path(__file__).resolve().parent.parent
NOTES = "<!-- notes: kept by bench/report.py -->"
RUN_TIMEOUT = 1800.0  # seconds for one run of one benchmark


@dataclass(frozen=True)
class Bench:
    name: str
    title: str
    args: list[str]


BENCHES = [
    Bench("throughput-20k", "1+6. End-to-end throughput and CPU per task, 20,000 tasks",
          ["bench.throughput", "--tasks", "20000"]),
    Bench("throughput-100k", "1+6. End-to-end throughput and CPU per task, 100,000 tasks",
          ["bench.throughput", "--tasks", "100000"]),
    Bench("intake-alone", "2. Intake alone, 50,000 tasks", ["bench.intake_alone", "--tasks", "50000"]),
    Bench("batch-building", "3. Batch building, 100,000 requests", ["bench.batch_building"]),
    Bench("result-delivery", "4. Result delivery, 100,000 results (baseline 1,000)",
          ["bench.notifier_memory"]),
    Bench("polling-cost", "5. Polling cost: 200 and 500 batches in flight (time scaled x0.25: "
          "a minute takes 15 s)", ["bench.polling_cost", "--scale", "0.25"]),
]


@dataclass
class Outcome:
    runs: list[dict[str, float]] = field(default_factory=list)
    loads: list[tuple[float, float]] = field(default_factory=list)  # 1-min load before, after
    failures: list[str] = field(default_factory=list)
    measured: str = field(default_factory=lambda: f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC")


def load(path: Path) -> dict[str, Outcome]:
    """The outcomes of earlier runs (kept beside the report), so a partial run keeps them."""
    if not path.exists():
        return {}
    return {name: Outcome(o["runs"], [tuple(x) for x in o["loads"]], o["failures"],
                          o["measured"]) for name, o in json.loads(path.read_text()).items()}


def save(path: Path, outcomes: dict[str, Outcome]) -> None:
    path.write_text(json.dumps({name: asdict(o) for name, o in outcomes.items()}, indent=1) + "\n")


def run_once(bench: Bench, outcome: Outcome) -> None:
    before = os.getloadavg()[0]
    try:
        done = subprocess.run([sys.executable, "-m", *bench.args], cwd=ROOT, text=True,
                              capture_output=True, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        outcome.failures.append(f"timed out after {RUN_TIMEOUT:.0f} s")
        return
    outcome.loads.append((before, os.getloadavg()[0]))
    sys.stdout.write(done.stdout)
    lines = [line for line in done.stdout.splitlines() if line.startswith(FIGURES)]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        outcome.failures.append(f"exit {done.returncode}: {tail[:200]}")
        return
    outcome.runs.append(json.loads(lines[-1].removeprefix(FIGURES)))


def machine() -> list[str]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor() or "unknown")
    memory = next(int(line.split()[1]) / 1024 / 1024 for line in
                  Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    nats = subprocess.run([server_binary(), "--version"], capture_output=True, text=True)
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in
                         ("nats-py", "faststream", "pydantic", "anthropic", "httpx2"))
    return [f"- CPU: {cpu}, {os.cpu_count()} cores; memory {memory:.1f} GiB; "
            f"{platform.system()} {platform.release()}",
            f"- Python {platform.python_version()}; {nats.stdout.strip()}; {versions}"]


def fmt(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"


def section(bench: Bench, outcome: Outcome) -> list[str]:
    lines = [f"### {bench.title}", "", f"`.venv/bin/python -m {' '.join(bench.args)}`", ""]
    if outcome.runs:
        lines += ["| figure | median | min | max |", "|---|---:|---:|---:|"]
        for key in outcome.runs[0]:
            values = [run[key] for run in outcome.runs if key in run]
            lines.append(f"| {key} | {fmt(statistics.median(values))} | {fmt(min(values))} "
                         f"| {fmt(max(values))} |")
        loads = ", ".join(f"{a:.1f}->{b:.1f}" for a, b in outcome.loads)
        lines += ["", f"{len(outcome.runs)} run(s), {outcome.measured}; 1-minute load average "
                  f"before->after each: {loads}."]
    for failure in outcome.failures:
        lines.append(f"- a run failed: {failure}")
    return [*lines, ""]


def median(outcomes: dict[str, Outcome], name: str, key: str) -> float | None:
    runs = outcomes.get(name, Outcome()).runs
    values = [run[key] for run in runs if key in run]
    return statistics.median(values) if values else None


def targets(outcomes: dict[str, Outcome]) -> list[str]:
    def row(target: str, value: float | None, shown: str, met: bool) -> str:
        if value is None:
            return f"| {target} | not measured | |"
        return f"| {target} | {shown} | {'met' if met else 'NOT met'} |"

    e2e = median(outcomes, "throughput-100k", "pipeline")
    e2e_ratio = median(outcomes, "throughput-100k", "ratio")
    intake = median(outcomes, "intake-alone", "ratio")
    build = median(outcomes, "batch-building", "built_and_sent_s")
    build_mem = median(outcomes, "batch-building", "peak_x_body")
    api = median(outcomes, "batch-building", "baseline_post_s")
    own = None if build is None or api is None else build - api
    deliver = median(outcomes, "result-delivery", "seconds")
    deliver_mem = median(outcomes, "result-delivery", "peak_x_baseline")
    calls_200 = median(outcomes, "polling-cost", "calls_per_min_200_in_flight")
    calls_500 = median(outcomes, "polling-cost", "calls_per_min_500_in_flight")
    lags = [run[k] for run in outcomes.get("polling-cost", Outcome()).runs
            for k in ("max_end_lag_s_200", "max_end_lag_s_500") if k in run]
    lag = max(lags) if lags else None  # every end: the worst run, not the median
    return [
        "| target | median measured | |", "|---|---|---|",
        row("end-to-end >= 10,000 tasks/s for 100,000 tasks", e2e,
            f"{fmt(e2e or 0)} tasks/s", (e2e or 0) >= 10_000),
        row("end-to-end >= 0.25 of one hop", e2e_ratio, fmt(e2e_ratio or 0),
            (e2e_ratio or 0) >= 0.25),
        row("intake alone >= 0.5 of one hop", intake, fmt(intake or 0), (intake or 0) >= 0.5),
        row("100,000-request batch built and sent <= 2 s", build, f"{fmt(build or 0)} s",
            (build or 99) <= 2),
        row("... of it batchbus's own (less the API's answer to the raw POST)", own,
            f"{fmt(own or 0)} s", (own or 99) <= 2),
        row("... with peak memory <= 3x the body", build_mem, f"{fmt(build_mem or 0)}x",
            (build_mem or 99) <= 3),
        row("100,000 results delivered <= 10 s", deliver, f"{fmt(deliver or 0)} s",
            (deliver or 99) <= 10),
        row("... with peak memory <= 1.5x that of 1,000 results", deliver_mem,
            f"{fmt(deliver_mem or 0)}x", (deliver_mem or 99) <= 1.5),
        row("200 batches in flight: < 100 poll calls a minute", calls_200,
            f"{fmt(calls_200 or 0)} /min", (calls_200 or 999) < 100),
        row("500 batches in flight: < 150 poll calls a minute", calls_500,
            f"{fmt(calls_500 or 0)} /min", (calls_500 or 999) < 150),
        row("every batch's end noticed within 60 s (largest lag, worst run)", lag,
            f"{fmt(lag or 0)} s", (lag or 999) <= 60),
        "",
    ]


def write(out: Path, runs: int, outcomes: dict[str, Outcome], started: float) -> None:
    notes = ""
    if out.exists() and NOTES in out.read_text():
        notes = out.read_text().split(NOTES, 1)[1].strip()
    lines = ["# Benchmarks", "",
             f"Written by `make bench` (`.venv/bin/python -m bench.report --runs {runs}`; "
             f"the last run took {(time.monotonic() - started) / 60:.0f} minutes). Each figure "
             "is the median of the runs, each run a fresh process with its own nats-server; "
             "every benchmark measures its baseline in the same run. When each section was "
             "measured is under it; the figures of every run are in benchmarks.json. "
             "No test asserts a timing.", "", "## Machine", "", *machine(), "",
             "## Against the targets of issue 8", "", *targets(outcomes), "## Figures", ""]
    for bench in BENCHES:
        if bench.name in outcomes:
            lines += section(bench, outcomes[bench.name])
    lines += ["## Notes", "", NOTES, "", notes, ""]
    out.write_text("\n".join(lines).rstrip() + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", nargs="+", choices=[b.name for b in BENCHES])
    parser.add_argument("--out", type=Path, help="default docs/benchmarks.md (and its .json)")
    args = parser.parse_args()
    started = time.monotonic()
    outcomes: dict[str, Outcome] = {}
    for bench in BENCHES:
        if args.only and bench.name not in args.only:
            continue
        outcome = outcomes[bench.name] = Outcome()
        for n in range(args.runs):
            print(f"== {bench.name} run {n + 1}/{args.runs}", flush=True)
            run_once(bench, outcome)
    out = args.out or ROOT / "docs" / "benchmarks.md"
    out.parent.mkdir(exist_ok=True)
    # A partial run (--only) replaces its benchmarks' outcomes and keeps the others'.
    outcomes = {**load(out.with_suffix(".json")), **outcomes}
    save(out.with_suffix(".json"), outcomes)
    write(out, args.runs, outcomes, started)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
