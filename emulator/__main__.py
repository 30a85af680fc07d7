"""`python -m batchbus.emulator [--host H] [--port P] [--processing-seconds X] [--config FILE.json]`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from batchbus.emulator.config import EmulatorConfig, EmulatorSettings
from batchbus.emulator.server import serve_forever
from batchbus.shared import gc_tuning


def parse_settings(argv: list[str] | None = None) -> EmulatorSettings:
    """Command-line flags override EMULATOR_* environment variables."""
    parser = argparse.ArgumentParser(prog="python -m batchbus.emulator", description=__doc__)
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--processing-seconds", type=float, dest="processing_seconds")
    parser.add_argument("--config", help="JSON file with EmulatorConfig fields")
    args = vars(parser.parse_args(argv))
    given = {key: value for key, value in args.items() if value is not None}
    return EmulatorSettings(**given)


def load_config(settings: EmulatorSettings) -> EmulatorConfig:
    data = json.loads(Path(settings.config).read_text()) if settings.config else {}
    if settings.processing_seconds is not None:
        data["processing_seconds"] = settings.processing_seconds
    return EmulatorConfig.model_validate(data)


def main(argv: list[str] | None = None) -> None:
    settings = parse_settings(argv)
    # It keeps every batch's requests: with the default collector, parsing a 100,000-request
    # create walked all of them again and again.
    gc_tuning.tune()
    serve_forever(load_config(settings), settings.host, settings.port)


if __name__ == "__main__":
    main()
