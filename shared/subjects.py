"""Every NATS name batchbus uses: subjects, streams, durables, buckets, message ids.

No other module spells a `batchbus.` subject or a stream name; build them here.
"""

import base64
import re

TOKEN_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
TOKEN_RE = re.compile(TOKEN_PATTERN)

# Public subjects (the contract: docs/contract.md).
TASKS_PREFIX = "batchbus.tasks"
TASKS_ALL = f"{TASKS_PREFIX}.>"
RESULTS_PREFIX = "batchbus.results"
RESULTS_ALL = f"{RESULTS_PREFIX}.>"
EVENTS_PREFIX = "batchbus.events.batches"
EVENTS_ALL = f"{EVENTS_PREFIX}.>"  # what the events stream keeps: both kinds below
BATCH_EVENTS = f"{EVENTS_PREFIX}.*"  # one event per batch: batchbus.events.batches.<batch_id>
CANCEL_PREFIX = "batchbus.cancel"
CANCEL_ALL = f"{CANCEL_PREFIX}.>"

# Internal subjects, hidden from tenants by NATS permissions.
ACCEPTED_PREFIX = "batchbus.internal.accepted"
ACCEPTED_ALL = f"{ACCEPTED_PREFIX}.>"
REALTIME_PREFIX = "batchbus.internal.realtime"  # tasks routed to the real-time Messages API
REALTIME_ALL = f"{REALTIME_PREFIX}.>"
BATCH_ENDED = "batchbus.internal.batches.ended"
DEAD_LETTERS_PREFIX = "batchbus.deadletters"
DEAD_LETTERS_ALL = f"{DEAD_LETTERS_PREFIX}.>"
WEBHOOK_FAILURES_PREFIX = f"{DEAD_LETTERS_PREFIX}.webhooks"  # results no endpoint took
INTERNAL_ALL = "batchbus.internal.>"
# Core NATS only, outside every stream (a stream would answer a request with its PubAck):
# each batcher run answers pings here while it lives (services/batcher/liveness.py).
BATCHER_RUNS_PREFIX = "batchbus.runs.batcher"

# Where a rejection goes when the task subject names no valid tenant.
INVALID_TENANT = "_invalid"

# Streams.
STREAM_TASKS = "BATCHBUS_TASKS"
STREAM_CANCELS = "BATCHBUS_CANCELS"
STREAM_INTERNAL = "BATCHBUS_INTERNAL"
STREAM_RESULTS = "BATCHBUS_RESULTS"
STREAM_EVENTS = "BATCHBUS_EVENTS"
STREAM_DEAD_LETTERS = "BATCHBUS_DLQ"

# Durable consumers, one per service; replicas share them.
DURABLE_INTAKE = "intake"
DURABLE_INTAKE_CANCELS = "intake-cancels"
DURABLE_BATCHER = "batcher"
DURABLE_NOTIFIER = "notifier"
DURABLE_NOTIFIER_REALTIME = "notifier-realtime"
DURABLE_NOTIFIER_WEBHOOKS = "notifier-webhooks"

# Key-value buckets and object stores.
KV_TASK_IDS = "task_ids"  # <tenant>.<task_id> -> stream sequence of the task that claimed it
KV_BATCHES = "batches"  # <intent_id> -> BatchRecord (write-ahead state of a batch)
KV_BATCH_IDS = "batch_ids"  # <batch_id> -> intent_id: every batch we own, kept past delivery
KV_CANCELS = "cancels"  # <tenant>.<task_id> -> when its owner asked to cancel it
KV_REALTIME_CALLS = "realtime_calls"  # <tenant>.<task_id> -> its real-time call's progress
KV_LEASES = "leases"  # <name> -> holder and expiry (the active poller)
LEASE_POLLER = "poller"
# <tenant>.<YYYY-MM-DD> -> USD reserved + spent that UTC day (a decimal string);
# <tenant>.<YYYY-MM-DD>.<task_id> -> the task's Reservation, so it is reserved only once.
KV_BUDGETS = "budgets"
OBJ_MANIFESTS = "batch_manifests"  # <intent_id> -> ManifestEntry rows, one per line
# One object store per tenant, `payloads_<tenant>`: task params and answers too large for one
# NATS message (a claim check). Per tenant, so NATS permissions can give each its own.
OBJ_PAYLOADS_PREFIX = "payloads_"

MSG_ID = "Nats-Msg-Id"
# On a stored result: the name of the tenant's webhook endpoint that should receive it.
WEBHOOK_HEADER = "Batchbus-Webhook"


def is_token(value: str) -> bool:
    """True when `value` may be a tenant or task id (a single safe subject token)."""
    return bool(TOKEN_RE.fullmatch(value))  # match's `$` also passes a trailing newline


def tasks(tenant: str) -> str:
    return f"{TASKS_PREFIX}.{tenant}"


def results(tenant: str, task_id: str) -> str:
    return f"{RESULTS_PREFIX}.{tenant}.{task_id}"


def results_of(tenant: str) -> str:
    return f"{RESULTS_PREFIX}.{tenant}.>"


def batch_events(batch_id: str) -> str:
    return f"{EVENTS_PREFIX}.{batch_id}"


# A batch mixes tenants; each tenant with tasks in it gets its own copy of the batch's events,
# so NATS permissions can confine a tenant to `batchbus.events.batches.*.<tenant>`.
def tenant_batch_events(batch_id: str, tenant: str) -> str:
    return f"{EVENTS_PREFIX}.{batch_id}.{tenant}"


def events_of(tenant: str) -> str:
    return f"{EVENTS_PREFIX}.*.{tenant}"


def batcher_run(run_id: str) -> str:
    return f"{BATCHER_RUNS_PREFIX}.{run_id}"


def payloads(tenant: str) -> str:
    """The tenant's object store bucket for payloads too large for a message."""
    return f"{OBJ_PAYLOADS_PREFIX}{tenant}"


def cancel(tenant: str) -> str:
    return f"{CANCEL_PREFIX}.{tenant}"


def dead_letters(tenant: str) -> str:
    return f"{DEAD_LETTERS_PREFIX}.{tenant}"


def webhook_failures(tenant: str) -> str:
    return f"{WEBHOOK_FAILURES_PREFIX}.{tenant}"


def accepted(tenant: str) -> str:
    return f"{ACCEPTED_PREFIX}.{tenant}"


def realtime(tenant: str) -> str:
    return f"{REALTIME_PREFIX}.{tenant}"


def tenant_of_task_subject(subject: str, prefix: str = TASKS_PREFIX) -> str | None:
    """The tenant token of `<prefix>.<tenant>`, or None if the subject has another shape."""
    head = prefix + "."
    if not subject.startswith(head):
        return None
    tenant = subject[len(head):]
    return tenant if is_token(tenant) else None


def task_key(tenant: str, task_id: str) -> str:
    """KV key of a task; both tokens are already valid KV key characters."""
    return f"{tenant}.{task_id}"


def kv_subject(bucket: str, key: str) -> str:
    """The subject a KV bucket stores `key` on (a KV write is a publish to it)."""
    return f"$KV.{bucket}.{key}"


def kv_stream(bucket: str) -> str:
    return f"KV_{bucket}"


def obj_stream(bucket: str) -> str:
    """The stream behind an object store bucket."""
    return f"OBJ_{bucket}"


def obj_chunks(bucket: str, nuid: str) -> str:
    """The subject an object's chunks are stored on (`nuid`: its ObjectInfo's)."""
    return f"$O.{bucket}.C.{nuid}"


def obj_meta(bucket: str, name: str) -> str:
    """The subject an object's description (ObjectInfo) is stored on."""
    return f"$O.{bucket}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"


def accepted_msg_id(tenant: str, task_id: str, attempt: int) -> str:
    return f"{tenant}:{task_id}:a{attempt}"


def realtime_msg_id(tenant: str, task_id: str) -> str:
    # Deliberately attempt 1's batch handoff id: both land in BATCHBUS_INTERNAL, so a task
    # redelivered to intake whose route decision flipped is still stored on one route only.
    return accepted_msg_id(tenant, task_id, 1)


def result_msg_id(tenant: str, task_id: str) -> str:
    return f"{tenant}:{task_id}:result"


def webhook_failure_msg_id(delivery_id: str) -> str:
    return f"{delivery_id}:webhook"


def rejected_msg_id(tenant: str, task_seq: int) -> str:
    # A rejected task does not claim its id (the user may fix and resend it), so its
    # result is keyed by the stream position of the rejected message instead.
    return f"{tenant}:rejected:{task_seq}"


def event_msg_id(batch_id: str, kind: str, detail: str = "") -> str:
    return f"{batch_id}:{kind}:{detail}" if detail else f"{batch_id}:{kind}"
