"""A nats-server running the example users of deploy/nats/accounts.conf, and helpers to
connect as one of them and to watch its error callback."""

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from batchbus.launcher.nats_server import NatsServer, start_nats

ROOT = Path(__file__).resolve().parents[2]
ACCOUNTS = ROOT / "deploy" / "nats" / "accounts.conf"
USERS = ("intake", "batcher", "poller", "notifier", "acme", "globex")


def password_variable(user: str) -> str:
    """The variable accounts.conf reads a user's password from."""
    kind = "TENANT_" if user in ("acme", "globex") else ""
    return f"BATCHBUS_{kind}{user.upper()}_PASSWORD"


@dataclass
class SecuredNats:
    server: NatsServer
    passwords: dict[str, str]

    @property
    def url(self) -> str:
        return self.server.url


def write_config(directory: Path, passwords: dict[str, str], extra: str = "") -> str:
    """server.conf: the example accounts.conf as it is, after the password variables it reads
    (an included file would not see variables of the including one), then `extra`."""
    lines = [f'{password_variable(u)}: "{p}"' for u, p in passwords.items()]
    config = directory / "server.conf"
    config.write_text("\n".join([*lines, ACCOUNTS.read_text(), extra]))
    return str(config)


def fresh_passwords() -> dict[str, str]:
    return {user: secrets.token_hex(12) for user in USERS}


@pytest.fixture(scope="module")
def secured_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredNats]:
    directory = tmp_path_factory.mktemp("secured-nats")
    passwords = fresh_passwords()
    server = start_nats(str(directory / "store"), config=write_config(directory, passwords))
    yield SecuredNats(server, passwords)
    server.stop()


class ErrorWatch:
    """The connection's error callback, kept for the test to wait on."""

    def __init__(self) -> None:
        self.errors: asyncio.Queue[Exception] = asyncio.Queue()

    async def callback(self, exc: Exception) -> None:
        await self.errors.put(exc)

    async def violation(self, subject: str, timeout: float = 5.0) -> str:
        """Waits (bounded) for the server's permissions violation naming `subject`."""
        async def find() -> str:
            while True:
                text = str(await self.errors.get())
                if "permissions violation" in text.lower() and f'"{subject.lower()}"' in text.lower():
                    return text
        return await asyncio.wait_for(find(), timeout)


@asynccontextmanager
async def connect_as(url: str, user: str, password: str,
                     **options: Any) -> AsyncIterator[tuple[Client, ErrorWatch]]:
    watch = ErrorWatch()
    nc = await nats.connect(url, user=user, password=password, error_cb=watch.callback,
                            allow_reconnect=False, **options)
    try:
        yield nc, watch
    finally:
        await nc.close()


async def expect_denied(nc: Client, watch: ErrorWatch, publish: list[str],
                        subscribe: list[str]) -> None:
    """Each publish and subscribe is refused, as the client's error callback reports."""
    for subject in publish:
        await nc.publish(subject, b"{}")
        await nc.flush()
        await watch.violation(subject)
    for subject in subscribe:
        await nc.subscribe(subject)
        await nc.flush()
        await watch.violation(subject)
