"""Poller: tracks every submitted batch until it ends, then hands it to the notifier."""
