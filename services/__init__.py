"""The four services; each runs with `python -m batchbus.services.<name>`."""

import importlib

from batchbus import extras


def run_service(name: str) -> None:
    """Entry point of `python -m batchbus.services.<name>`: one clear line, not an
    ImportError, when the `services` extra is not installed."""
    try:
        extras.require("services", f"python -m batchbus.services.{name}")
    except extras.MissingExtra as exc:
        raise SystemExit(f"error: {exc}") from None
    importlib.import_module(f"batchbus.services.{name}.app").main()
