"""The emulated clock: wall time scaled by `time_scale`, plus an offset tests can advance."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime


class Clock:
    """Monotonic emulated time in epoch seconds; changing the scale never makes it jump."""

    def __init__(self, scale: float = 1.0) -> None:
        self._lock = threading.Lock()
        self._scale = scale
        self._base_epoch = time.time()
        self._base_mono = time.monotonic()
        self._offset = 0.0

    def now(self, scale: float | None = None) -> float:
        with self._lock:
            if scale is not None and scale != self._scale:
                self._rebase(scale)
            return self._unlocked_now()

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._offset += seconds
            return self._unlocked_now()

    def reset_offset(self) -> None:
        with self._lock:
            self._offset = 0.0

    def _unlocked_now(self) -> float:
        elapsed = (time.monotonic() - self._base_mono) * self._scale
        return self._base_epoch + elapsed + self._offset

    def _rebase(self, scale: float) -> None:
        # Fold the elapsed scaled time into the base so the new scale applies from now on.
        self._base_epoch = self._unlocked_now() - self._offset
        self._base_mono = time.monotonic()
        self._scale = scale


def rfc3339(epoch_seconds: float) -> str:
    """UTC with microseconds and `Z`, as the API documentation shows."""
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
