"""Runs batchbus on one machine: an embedded nats-server, the emulator and the four services.

Used by the demo and the integration tests; production runs each service on its own.
"""
