"""Code shared by the four batchbus services: contracts, names, settings, NATS setup."""
