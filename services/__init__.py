"""The four batchbus services: intake, batcher, poller, notifier."""
