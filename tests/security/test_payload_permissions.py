"""The payload buckets under deploy/nats/accounts.conf: a tenant puts, reads, replaces and
deletes objects in its own bucket and touches no other; each service uses every tenant's as
far as its job needs. The calls are shared/payloads.py's and nats-py's own, run as each user."""

from contextlib import AbstractAsyncContextManager

import nats.errors
import pytest
from nats.aio.client import Client

from batchbus.shared import subjects
from batchbus.shared.payloads import PayloadMissing, Payloads
from tests.security.conftest import ErrorWatch, SecuredNats, connect_as, expect_denied

pytestmark = [pytest.mark.nats]

TENANTS = ("acme", "globex")
TTL = 3600.0
DATA = bytes(range(256)) * 1200  # 300 KB: three chunks of nats-py's 128 KB


def as_user(secured: SecuredNats,
            user: str) -> AbstractAsyncContextManager[tuple[Client, ErrorWatch]]:
    """Connected as `user`; a tenant gets its replies on its own inbox prefix."""
    options = {"inbox_prefix": f"_INBOX_{user}"} if user in TENANTS else {}
    return connect_as(secured.url, user, secured.passwords[user], **options)


def bucket_subjects(tenant: str) -> list[str]:
    """Every way into a tenant's bucket: writes, lookup, create, reads, purge."""
    bucket = subjects.payloads(tenant)
    stream = f"OBJ_{bucket}"
    return [f"$O.{bucket}.C.x", f"$O.{bucket}.M.x", f"$JS.API.STREAM.INFO.{stream}",
            f"$JS.API.STREAM.CREATE.{stream}", f"$JS.API.STREAM.MSG.GET.{stream}",
            f"$JS.API.DIRECT.GET.{stream}", f"$JS.API.STREAM.PURGE.{stream}"]


async def make_buckets(secured: SecuredNats) -> None:
    """What a service does on first use, or the operator when adding a tenant (a tenant may
    not: see accounts.conf)."""
    async with as_user(secured, "notifier") as (nc, watch):
        payloads = Payloads(nc.jetstream(), TTL)
        for tenant in TENANTS:
            await payloads.bucket(tenant)
        assert watch.errors.empty()


async def test_a_tenant_uses_its_own_bucket(secured_nats: SecuredNats) -> None:
    await make_buckets(secured_nats)
    async with as_user(secured_nats, "acme") as (nc, watch):
        payloads = Payloads(nc.jetstream(), TTL)  # opens it with STREAM.INFO alone
        await payloads.put("acme", "params.t1", DATA)
        assert await payloads.read("acme", "params.t1") == DATA  # meta by message get,
        await payloads.put("acme", "params.t1", DATA[::-1])  # chunks by direct get; the
        assert await payloads.read("acme", "params.t1") == DATA[::-1]  # old ones purged
        store = await nc.jetstream().object_store(subjects.payloads("acme"))
        assert (await store.get_info("params.t1")).size == len(DATA)
        assert await payloads.delete("acme", "params.t1")
        with pytest.raises(PayloadMissing):
            await payloads.read("acme", "params.t1")
        assert watch.errors.empty()


async def test_a_tenant_reads_by_direct_get_not_through_a_consumer(
        secured_nats: SecuredNats) -> None:
    """nats-py's ObjectStore.get finds the stream with STREAM.NAMES, which would list every
    tenant's bucket: refused, so the reply never comes (a short timeout, then the report)."""
    await make_buckets(secured_nats)
    async with as_user(secured_nats, "acme") as (nc, watch):
        store = await nc.jetstream(timeout=0.5).object_store(subjects.payloads("acme"))
        await store.put("small", b"x")
        with pytest.raises(nats.errors.TimeoutError):
            await store.get("small")
        await watch.violation("$JS.API.STREAM.NAMES")


async def test_a_tenant_touches_no_other_bucket(secured_nats: SecuredNats) -> None:
    own = f"OBJ_{subjects.payloads('acme')}"
    publish = [
        *bucket_subjects("globex"),
        f"$JS.API.STREAM.CREATE.{own}",  # its config could mirror or source any stream
        f"$JS.API.STREAM.UPDATE.{own}",
        f"$JS.API.STREAM.DELETE.{own}",
        f"$JS.API.CONSUMER.CREATE.{own}",
        "$JS.API.STREAM.NAMES",
    ]
    async with as_user(secured_nats, "acme") as (nc, watch):
        await expect_denied(nc, watch, publish, [f"$O.{subjects.payloads('globex')}.>"])


async def test_the_services_use_every_tenants_bucket(secured_nats: SecuredNats) -> None:
    """The notifier stores answers; intake and the batcher read them but may not write; the
    notifier deletes them; the poller has no part in it; nobody may use an unlisted bucket."""
    async with as_user(secured_nats, "notifier") as (nc, watch):
        for tenant in TENANTS:  # the buckets are created here if missing
            await Payloads(nc.jetstream(), TTL).put(tenant, "answer.t1", DATA)
        assert watch.errors.empty()
    for user in ("intake", "batcher"):
        async with as_user(secured_nats, user) as (nc, watch):
            payloads = Payloads(nc.jetstream(), TTL)
            for tenant in TENANTS:
                assert await payloads.read(tenant, "answer.t1") == DATA
            assert watch.errors.empty()
            writes = [subject for tenant in TENANTS for subject in bucket_subjects(tenant)
                      if subject.startswith("$O.") or ".PURGE." in subject]
            await expect_denied(nc, watch, [*writes, *bucket_subjects("initech")], [])
    async with as_user(secured_nats, "notifier") as (nc, watch):
        payloads = Payloads(nc.jetstream(), TTL)
        for tenant in TENANTS:
            assert await payloads.delete(tenant, "answer.t1")
            with pytest.raises(PayloadMissing):
                await payloads.read(tenant, "answer.t1")
        assert watch.errors.empty()
        await expect_denied(nc, watch, bucket_subjects("initech"), [])
    async with as_user(secured_nats, "poller") as (nc, watch):
        await expect_denied(nc, watch, bucket_subjects("acme"), [])
