"""The cyclic garbage collector's settings for the services' message loops."""

import gc

# Python's default collects the youngest generation every 700 net container allocations. A
# service handling thousands of messages a second then spends 15-25% of its CPU in the
# collector (measured on intake with bench/intake_alone.py), and every full collection
# walks all it holds: a batcher holding 100,000 tasks or a notifier holding a manifest.
YOUNG_THRESHOLD = 20_000
OLDER_THRESHOLD = 20  # collections of the younger generation before an older one's


def tune() -> None:
    """Fewer, larger collections; called once, after the imports.

    Reference counting still frees all acyclic garbage at once; only cycles wait longer,
    a few MB at most. `gc.freeze` moves what start-up built (modules, classes, settings) out
    of every later collection: it lives as long as the process anyway.
    """
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)
