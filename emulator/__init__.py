"""Local emulator of the Anthropic Message Batches API, for tests and demos.

In-process: `with run_emulator(EmulatorConfig(...)) as emu: Anthropic(base_url=emu.url, ...)`.
"""

from emulator.app import create_app
from emulator.config import EmulatorConfig, FaultRule, OutcomeRule, UsageOverride
from emulator.server import EmulatorHandle, run_emulator, start_emulator
from emulator.state import EmulatorState

__all__ = [
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
