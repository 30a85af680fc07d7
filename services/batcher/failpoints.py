"""Crash points for fault tests: `BATCHBUS_FAILPOINTS=batcher.after_create` makes the process
SIGKILL itself when it reaches that step, so tests can kill a service at an exact boundary.

Unset in production: `hit` is then one set lookup.
"""

import logging
import os
import signal

ENABLED = frozenset(p.strip() for p in os.environ.get("BATCHBUS_FAILPOINTS", "").split(",")
                    if p.strip())

log = logging.getLogger("batchbus.failpoints")


def hit(name: str) -> None:
    if name in ENABLED:
        log.warning("failpoint %s reached: killing this process", name)
        os.kill(os.getpid(), signal.SIGKILL)
