"""Running the emulator: in a background thread for tests, or in the foreground for the CLI."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import uvicorn

from batchbus.emulator.app import create_app
from batchbus.emulator.config import EmulatedModel, EmulatorConfig
from batchbus.emulator.state import EmulatorState


class _NotifyingServer(uvicorn.Server):
    """A uvicorn server that calls `on_ready` once it accepts connections."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            self._on_ready()


def _uvicorn_config(state: EmulatorState) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(state),
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
    )


def bind(host: str, port: int) -> socket.socket:
    """Bind before serving so that port 0 yields a known, real port.

    The protocol must be IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets
    that say so, and without it keep-alive calls stall ~40 ms on delayed ACKs.
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen()
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{host}:{port}"


class EmulatorHandle:
    """A running in-thread emulator: `.url` for `base_url`, `.state` to steer it."""

    def __init__(self, state: EmulatorState, server: uvicorn.Server, url: str) -> None:
        self.state = state
        self.url = url
        self._server = server
        self._thread: threading.Thread | None = None

    def configure(self, **changes: Any) -> EmulatorConfig:
        """Partial config update, like `PUT /_emulator/config`."""
        return self.state.configure(changes)

    def set_model(self, model_id: str, **changes: Any) -> EmulatedModel:
        """Change fields of one model (or add one), like `PUT /_emulator/models/{id}`."""
        return self.state.set_model(model_id, changes)

    def remove_model(self, model_id: str) -> None:
        """Forget a model, like `DELETE /_emulator/models/{id}`."""
        self.state.remove_model(model_id)

    def advance(self, seconds: float) -> None:
        self.state.advance(seconds)

    def reset(self, config: EmulatorConfig | None = None) -> None:
        """Forget everything; `config` (default: the start-up config) replaces the current one."""
        self.state.reset(config or self.state.initial_config)

    def stop(self, timeout: float = 5.0) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> EmulatorHandle:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_emulator(
    config: EmulatorConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ready_timeout: float = 10.0,
) -> EmulatorHandle:
    """Serve in a daemon thread; return once it accepts connections (or raise on timeout)."""
    state = EmulatorState(config)
    sock = bind(host, port)
    ready = threading.Event()
    server = _NotifyingServer(_uvicorn_config(state), ready.set)
    handle = EmulatorHandle(state, server, url_of(sock))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="emulator", daemon=True
    )
    handle._thread = thread
    thread.start()
    if not ready.wait(ready_timeout):
        handle.stop()
        sock.close()
        raise RuntimeError(f"emulator did not start within {ready_timeout} s")
    return handle


@contextmanager
def run_emulator(config: EmulatorConfig | None = None, **kwargs: Any) -> Iterator[EmulatorHandle]:
    """`with run_emulator(config) as emu:` — stopped when the block exits."""
    handle = start_emulator(config, **kwargs)
    try:
        yield handle
    finally:
        handle.stop()


def serve_forever(config: EmulatorConfig, host: str, port: int) -> None:
    """Foreground server for the CLI; announces its URL on stdout once ready."""
    sock = bind(host, port)
    url = url_of(sock)
    server = _NotifyingServer(
        _uvicorn_config(EmulatorState(config)),
        lambda: print(f"emulator listening on {url}", flush=True),
    )
    server.run(sockets=[sock])
