"""POSTs stored results to their tenant's webhook endpoints, signed, with retries.

Its own durable consumer on the results stream: results reach NATS first and never wait for
an endpoint. A result is meant for an endpoint when its message carries the endpoint's name in
the `Batchbus-Webhook` header; any other result is acknowledged at once.
"""

import asyncio
import logging

import httpx2
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig

from batchbus.services.notifier.metrics import NotifierMetrics
from batchbus.services.notifier.results import retry_delay
from batchbus.services.notifier.settings import NotifierSettings
from batchbus.shared import consumer, subjects
from batchbus.shared.models import Result
from batchbus.shared.publishing import publish
from batchbus.shared.runtime import readable, serve_each
from batchbus.shared.webhooks import (
    ATTEMPT_HEADER,
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    Endpoints,
    WebhookFailure,
    signature,
)

log = logging.getLogger("batchbus.notifier.webhooks")

USER_AGENT = "batchbus-webhooks/1"
MAX_PENDING = 20_000  # results waiting out a back-off stay unacknowledged meanwhile


class WebhookSender:
    def __init__(self, js: JetStreamContext, endpoints: Endpoints, settings: NotifierSettings,
                 metrics: NotifierMetrics) -> None:
        self.js = js
        self.endpoints = endpoints
        self.settings = settings
        self.metrics = metrics

    async def run(self) -> None:
        """The loop: fetches as many results as there are free POST slots."""
        # Redirects are not followed: an allowed endpoint must not lead to a host that is not.
        async with httpx2.AsyncClient(timeout=self.settings.webhook_timeout_seconds,
                                      follow_redirects=False,
                                      headers={"User-Agent": USER_AGENT}) as http, \
                consumer.pull(self.js, subjects.RESULTS_ALL, subjects.DURABLE_NOTIFIER_WEBHOOKS,
                              subjects.STREAM_RESULTS, ConsumerConfig(
                                  ack_wait=2 * self.settings.webhook_timeout_seconds + 30,
                                  max_deliver=-1, max_ack_pending=MAX_PENDING)) as psub:

            async def one(msg: Msg) -> None:
                name = (msg.headers or {}).get(subjects.WEBHOOK_HEADER)
                if name:
                    await self.handle(msg, name, http)
                else:  # not meant for a webhook
                    await msg.ack()

            # Without NATS, a failed nak is left to ack_wait, which redelivers it anyway.
            await serve_each(psub, one, at_once=self.settings.webhook_concurrency,
                             retry_delay=self.settings.webhook_retry_delay_seconds)

    async def handle(self, msg: Msg, name: str, http: httpx2.AsyncClient) -> None:
        """One attempt for one result: ack on 2xx, a delayed nak before the last attempt,
        then the failure record."""
        if (result := await readable(msg, Result, "result for a webhook")) is None:
            return
        attempt = msg.metadata.num_delivered or 1
        delivery_id = (msg.headers or {}).get(subjects.MSG_ID) or str(msg.metadata.sequence.stream)
        endpoint = self.endpoints.get(result.tenant, name)
        if endpoint is None:  # removed from the configuration since intake accepted the task
            await self._give_up(msg, result, name, delivery_id, attempt, "endpoint not configured")
            return
        error = await self._post(http, endpoint.url, signature(endpoint.secret, msg.data),
                                 msg.data, delivery_id, attempt)
        if error is None:
            self.metrics.webhook_deliveries.labels("delivered").inc()
            await msg.ack()
        elif attempt >= self.settings.webhook_max_attempts:
            await self._give_up(msg, result, name, delivery_id, attempt, error)
        else:
            self.metrics.webhook_deliveries.labels("retried").inc()
            log.info("webhook %s of %s: attempt %d failed (%s)", name, result.tenant, attempt, error)
            await msg.nak(delay=retry_delay(attempt, self.settings.webhook_retry_delay_seconds,
                                            self.settings.webhook_retry_max_delay_seconds))

    async def _post(self, http: httpx2.AsyncClient, url: str, signed: str, body: bytes,
                    delivery_id: str, attempt: int) -> str | None:
        """None when the endpoint answered 2xx, else what went wrong (without the URL, which
        may hold a token). The answer's body is never read: only its status counts."""
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signed,
                   DELIVERY_HEADER: delivery_id, ATTEMPT_HEADER: str(attempt)}
        try:
            # httpx's timeout bounds each phase; this bounds the whole call, within ack_wait.
            async with asyncio.timeout(2 * self.settings.webhook_timeout_seconds):
                async with http.stream("POST", url, content=body, headers=headers) as response:
                    status = response.status_code
        except TimeoutError:
            return "TimeoutError"
        except httpx2.HTTPError as exc:
            return type(exc).__name__
        return None if 200 <= status < 300 else f"HTTP {status}"

    async def _give_up(self, msg: Msg, result: Result, name: str, delivery_id: str,
                       attempts: int, error: str) -> None:
        failure = WebhookFailure(tenant=result.tenant, task_id=result.task_id, webhook=name,
                                 delivery_id=delivery_id, attempts=attempts, error=error,
                                 result=result)
        await publish(self.js, subjects.webhook_failures(result.tenant), failure,
                      subjects.STREAM_DEAD_LETTERS, subjects.webhook_failure_msg_id(delivery_id))
        self.metrics.webhook_deliveries.labels("failed").inc()
        log.warning("webhook %s of %s: gave up on %s after %d attempt(s) (%s)",
                    name, result.tenant, result.task_id, attempts, error)
        await msg.ack()
