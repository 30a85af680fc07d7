"""Fixtures: one in-thread emulator per session, reset before every test, and SDK clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import anthropic
import pytest

from batchbus.emulator import EmulatorConfig, EmulatorHandle, start_emulator
from tests.emulator.helpers import make_async_client, make_client


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[EmulatorHandle]:
    """The shared server; tests use `emu`, which resets it first."""
    handle = start_emulator(EmulatorConfig())
    yield handle
    handle.stop()


@pytest.fixture
def emu(emulator_server: EmulatorHandle) -> EmulatorHandle:
    """A clean emulator with the default config (no batches, logs, faults or clock offset)."""
    emulator_server.reset(EmulatorConfig())
    return emulator_server


@pytest.fixture
def client(emu: EmulatorHandle) -> Iterator[anthropic.Anthropic]:
    """A strict, non-retrying sync SDK client pointed at the emulator."""
    with make_client(emu) as sdk:
        yield sdk


@pytest.fixture
async def aclient(emu: EmulatorHandle) -> AsyncIterator[anthropic.AsyncAnthropic]:
    """The async twin of `client`."""
    async with make_async_client(emu) as sdk:
        yield sdk
