"""Identifier formats of the real API: `req_`, `msgbatch_01…`, `msg_01…`, `workerreq_…`."""

from __future__ import annotations

import hashlib
import secrets

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def random_id(prefix: str, length: int = 24) -> str:
    """`prefix` + `length` random base62 characters."""
    return prefix + "".join(secrets.choice(_BASE62) for _ in range(length))


def derived_id(prefix: str, seed: str, length: int = 24) -> str:
    """A stable id: the same seed always yields the same id (results re-download identically)."""
    # One byte per character: the slight modulo bias is irrelevant for opaque ids.
    digest = hashlib.sha256(seed.encode()).digest()
    return prefix + "".join(_BASE62[byte % 62] for byte in digest[:length])


def request_id() -> str:
    return random_id("req_")


def batch_id() -> str:
    return random_id("msgbatch_01", 22)


def message_id(seed: str | None = None) -> str:
    return random_id("msg_01", 22) if seed is None else derived_id("msg_01", seed, 22)


def worker_request_id(seed: str) -> str:
    return derived_id("workerreq_01", seed, 22)
