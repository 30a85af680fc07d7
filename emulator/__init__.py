"""Local emulator of the Anthropic Message Batches API, for tests and demos.

In-process: `with run_emulator(EmulatorConfig(...)) as emu: Anthropic(base_url=emu.url, ...)`.
"""

from batchbus.emulator.app import create_app
from batchbus.emulator.config import (
    EmulatedModel,
    EmulatorConfig,
    FaultRule,
    OutcomeRule,
    UsageOverride,
)
from batchbus.emulator.server import EmulatorHandle, run_emulator, start_emulator
from batchbus.emulator.state import EmulatorState

__all__ = [
    "EmulatedModel",
    "EmulatorConfig",
    "EmulatorHandle",
    "EmulatorState",
    "FaultRule",
    "OutcomeRule",
    "UsageOverride",
    "create_app",
    "run_emulator",
    "start_emulator",
]
