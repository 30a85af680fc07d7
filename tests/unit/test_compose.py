"""docker-compose.yml, Dockerfile, .env.example and prometheus.yml agree with the code.

No Docker engine runs here, so `docker compose config` cannot. Instead the compose file is
validated against the official compose-spec JSON schema that check-jsonschema ships
(`--builtin-schema vendor.compose-spec`), as written and after `${VAR:-default}`
interpolation, and its contents are checked against the settings classes and entry points.
"""

import fnmatch
import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pydantic import AliasChoices, SecretStr
from pydantic_settings import BaseSettings
from ruamel.yaml import YAML

from batchbus.emulator.__main__ import load_config, parse_settings
from batchbus.emulator.config import EmulatorConfig, EmulatorSettings
from batchbus.services.batcher.settings import BatcherSettings
from batchbus.services.intake.settings import IntakeSettings
from batchbus.services.notifier.settings import NotifierSettings
from batchbus.services.poller.settings import PollerSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
PROMETHEUS = ROOT / "monitoring" / "prometheus" / "prometheus.yml"

SERVICES: dict[str, type[BaseSettings]] = {
    "intake": IntakeSettings,
    "batcher": BatcherSettings,
    "poller": PollerSettings,
    "notifier": NotifierSettings,
}
# The public contract's variables (design.md, "Configuration").
DESIGN_VARS = {
    "NATS_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "BATCHER_MAX_REQUESTS",
    "BATCHER_MAX_BYTES", "BATCHER_MAX_WAIT_SECONDS", "POLLER_INTERVAL_SECONDS",
    "NOTIFIER_MAX_ATTEMPTS", "METRICS_PORT",
}
# What compose must set to other values than the code's defaults, and why.
CONTAINER_VALUES = {
    "NATS_URL": "nats://nats:4222",  # the nats service on the compose network
    "METRICS_HOST": "0.0.0.0",  # reachable by Prometheus and other containers
    # The dev profile's emulator, so nothing is paid by mistake; never empty.
    "ANTHROPIC_BASE_URL": "http://emulator:8787",
    "ANTHROPIC_API_KEY": SecretStr("emulator-key"),  # the SDK sends nothing without a key
}
NOT_PASSED = {"METRICS_PORT"}  # the health checks and Prometheus use the default ports
VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*):-(?P<default>[^}]*)\}")
ENV_LINE = re.compile(r"^(?P<comment>#\s*)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")


def load_yaml(path: Path) -> Any:
    return YAML(typ="safe", pure=True).load(path.read_text())


@cache
def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE)
    assert isinstance(data, dict)
    return data


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's `${NAME:-default}`: the variable's value unless it is unset or empty."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if isinstance(value, str):
        return VARIABLE.sub(lambda m: env.get(m["name"]) or m["default"], value)
    return value


def settings_env(cls: type[BaseSettings], path: tuple[str, ...] = ()) -> dict[str, tuple[str, ...]]:
    """Every environment variable `cls` reads (nested settings included) -> attribute path."""
    prefix = cls.model_config.get("env_prefix", "")
    found: dict[str, tuple[str, ...]] = {}
    for name, field in cls.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseSettings):
            found |= settings_env(field.annotation, (*path, name))
            continue
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names = [choice for choice in alias.choices if isinstance(choice, str)]
        elif isinstance(alias, str):
            names = [alias]
        else:
            names = [prefix + name]
        for env in names:
            found[env.upper()] = (*path, name)
    return found


def code_vars() -> set[str]:
    names = {var for cls in SERVICES.values() for var in settings_env(cls)}
    return names | set(settings_env(EmulatorSettings))


def lookup(settings: BaseSettings, path: tuple[str, ...]) -> Any:
    value: Any = settings
    for name in path:
        value = getattr(value, name)
    return value


def env_example() -> dict[str, tuple[bool, str]]:
    """.env.example as {name: (active, value)}; `# NAME=value` lines are inactive."""
    entries: dict[str, tuple[bool, str]] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if match := ENV_LINE.match(line):
            assert match["name"] not in entries, f"{match['name']} appears twice in .env.example"
            entries[match["name"]] = (match["comment"] is None, match["value"])
    return entries


def default_port(service: str) -> int:
    match = re.search(r"default_port=(\d+)", (ROOT / "services" / service / "app.py").read_text())
    assert match, f"services/{service}/app.py passes no default_port"
    return int(match[1])


def healthcheck_port(service: dict[str, Any], path: str) -> int:
    test = service["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], "the image has no curl or wget: check with python"
    compile(test[3], "<healthcheck>", "exec")
    match = re.search(rf"http://127\.0\.0\.1:(\d+){re.escape(path)}'", test[3])
    assert match, test[3]
    return int(match[1])


def check_jsonschema(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         *map(str, files)],
        capture_output=True, text=True, timeout=60, check=False)


def test_compose_file_matches_the_compose_spec_schema(tmp_path: Path) -> None:
    interpolated = tmp_path / "interpolated.json"
    interpolated.write_text(json.dumps(interpolate(compose(), {})))
    result = check_jsonschema(COMPOSE, interpolated)
    assert result.returncode == 0, result.stdout + result.stderr

    broken = tmp_path / "broken.json"  # the validator is really at work
    data = interpolate(compose(), {})
    data["services"]["intake"]["bogus_key"] = True
    broken.write_text(json.dumps(data))
    result = check_jsonschema(broken)
    assert result.returncode == 1
    assert "bogus_key" in result.stdout


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)
    elif isinstance(value, str):
        yield value


def test_every_variable_has_a_default() -> None:
    """`docker compose up` works without a .env: every `$` is a `${NAME:-default}`."""
    found = 0
    for value in strings(compose()):
        found += len(VARIABLE.findall(value))
        assert "$" not in VARIABLE.sub("", value).replace("$$", ""), value
    assert found


@pytest.mark.parametrize("name", [*SERVICES, "emulator"])
def test_python_modules_exist_and_are_in_the_image(name: str) -> None:
    command = compose()["services"][name]["command"]
    assert command[:2] == ["python", "-m"]
    module = command[2]
    if name in SERVICES:
        assert module == f"batchbus.services.{name}"
    path = ROOT.joinpath(*module.split("."))
    assert (path / "__main__.py").is_file() or path.with_suffix(".py").is_file(), module

    top, folder = module.split(".")[:2]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    assert any(fnmatch.fnmatch(top, pattern) for pattern in include), f"{top} is not packaged"
    dockerfile = (ROOT / "Dockerfile").read_text()
    # batchbus/<folder> links to the top-level folder: the image needs both.
    assert (ROOT / top / folder).resolve() == ROOT / folder
    for copied in (top, folder, "shared"):
        assert re.search(rf"^COPY {copied} \./{copied}$", dockerfile, re.M), \
            f"the Dockerfile skips {copied}/"
        assert copied not in (ROOT / ".dockerignore").read_text().split()


@pytest.mark.parametrize("name", SERVICES)
def test_services_can_scale(name: str) -> None:
    service = compose()["services"][name]
    assert "ports" not in service, "a fixed host port breaks `--scale`"
    assert "container_name" not in service, "a fixed container name breaks `--scale`"
    assert service["build"] == "."
    assert service["image"] == "batchbus:latest"
    assert service["restart"] == "unless-stopped"
    assert service["depends_on"]["nats"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", SERVICES)
def test_health_and_scrape_ports_are_the_default_metrics_ports(name: str) -> None:
    port = default_port(name)
    assert healthcheck_port(compose()["services"][name], "/healthz") == port
    assert '"/healthz"' in (ROOT / "shared" / "app.py").read_text()

    jobs = {job["job_name"]: job for job in load_yaml(PROMETHEUS)["scrape_configs"]}
    job = jobs[name]
    targets = [f"{name}:{sd['port']}" for sd in job.get("dns_sd_configs", [])
               if sd["names"] == [name] and sd.get("type", "SRV") == "A"]
    targets += [t for sc in job.get("static_configs", []) for t in sc["targets"]]
    assert targets == [f"{name}:{port}"]
    assert job.get("metrics_path", "/metrics") == "/metrics"


def test_nats_is_2_12_or_newer_with_jetstream_and_a_volume() -> None:
    nats = compose()["services"]["nats"]
    match = re.fullmatch(r"nats:(\d+)\.(\d+)\.\d+-alpine[\w.]*", nats["image"])
    assert match, f"{nats['image']}: want a pinned x.y.z alpine tag (the health check needs wget)"
    assert (int(match[1]), int(match[2])) >= (2, 12)
    command = nats["command"]
    assert "-js" in command
    assert command[command.index("-m") + 1] == "8222"
    store = command[command.index("-sd") + 1]
    volume = next(v for v in nats["volumes"] if v.split(":")[1] == store)
    assert volume.split(":")[0] in compose()["volumes"]
    assert nats["healthcheck"]["test"] == ["CMD", "wget", "-qO-", "http://127.0.0.1:8222/healthz"]


@pytest.mark.parametrize("dotenv", ["no .env", "cp .env.example .env"])
@pytest.mark.parametrize("name", SERVICES)
def test_service_environment_is_what_the_code_reads(
        name: str, dotenv: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cls = SERVICES[name]
    reads = settings_env(cls)
    host_env = {} if dotenv == "no .env" else {k: v for k, (on, v) in env_example().items() if on}
    env = interpolate(compose(), host_env)["services"][name]["environment"]
    assert isinstance(env, dict)
    assert set(env) <= set(reads), f"{name} does not read {set(env) - set(reads)}"
    assert set(reads) - NOT_PASSED <= set(env), f"{name}: pass these through docker-compose.yml"

    for var in code_vars() | {"ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"}:
        monkeypatch.delenv(var, raising=False)
    defaults = cls()
    for var, value in env.items():
        monkeypatch.setenv(var, str(value))
    configured = cls()  # raises where a value is out of the field's bounds
    for var in env:
        want = CONTAINER_VALUES.get(var, lookup(defaults, reads[var]))
        assert lookup(configured, reads[var]) == want, var


@pytest.mark.parametrize("dotenv", ["no .env", "cp .env.example .env"])
def test_emulator_in_the_dev_profile(dotenv: str, monkeypatch: pytest.MonkeyPatch) -> None:
    host_env = {} if dotenv == "no .env" else {k: v for k, (on, v) in env_example().items() if on}
    emulator = interpolate(compose(), host_env)["services"]["emulator"]
    assert emulator["profiles"] == ["dev"]
    assert set(emulator["environment"]) <= set(settings_env(EmulatorSettings))
    for var in settings_env(EmulatorSettings):
        monkeypatch.delenv(var, raising=False)
    for var, value in emulator["environment"].items():
        monkeypatch.setenv(var, str(value))
    settings = parse_settings(emulator["command"][3:])
    assert (settings.host, settings.port) == ("0.0.0.0", 8787)
    assert load_config(settings) == EmulatorConfig()
    assert healthcheck_port(emulator, "/_emulator/stats") == settings.port
    assert f"http://emulator:{settings.port}" in ENV_EXAMPLE.read_text()


def test_env_example_lists_every_variable_once_with_a_comment() -> None:
    entries = env_example()
    assert set(entries) == code_vars(), "every variable the code reads, and only those"
    assert DESIGN_VARS <= set(entries)
    lines = ENV_EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        if ENV_LINE.match(line):
            above = lines[i - 1]
            assert above.startswith("# ") and not ENV_LINE.match(above), f"no comment above {line}"
    assert entries["ANTHROPIC_API_KEY"] == (True, "emulator-key"), "never a real key in .env.example"

    used = {m["name"]: m["default"] for m in VARIABLE.finditer(COMPOSE.read_text())}
    for name, (active, value) in entries.items():
        if active:  # a value in .env must reach the containers, and default to the same
            assert name in used, f"{name} is in .env.example but docker-compose.yml ignores it"
            assert value == used[name], f"{name}: .env.example {value!r}, compose {used[name]!r}"
        else:
            assert name not in used, f"{name} is used by docker-compose.yml: uncomment it"
    assert set(used) <= {name for name, (active, _) in entries.items() if active}


def test_monitoring_mounts() -> None:
    services = compose()["services"]
    assert any(v.startswith("./monitoring/prometheus:/etc/prometheus")
               for v in services["prometheus"]["volumes"])
    assert PROMETHEUS.is_file()
    assert set(services["grafana"]["volumes"]) >= {
        "./monitoring/grafana/provisioning:/etc/grafana/provisioning:ro",
        "./monitoring/grafana/dashboards:/var/lib/grafana/dashboards:ro",
    }


def test_dockerfile_builds_one_non_root_image() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    assert len([line for line in lines if re.fullmatch(r"FROM python:3\.11\.\d+-slim-\w+", line)]) == 1
    assert "WORKDIR /app" in lines
    assert any(re.match(r"RUN pip install (--no-deps )?\.", line) for line in lines)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert ".env" in (ROOT / ".dockerignore").read_text().split()
