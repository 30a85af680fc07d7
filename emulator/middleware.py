"""ASGI middleware giving every response a `request-id` header (also used in error bodies)."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from batchbus.emulator.ids import request_id


class RequestIdMiddleware:
    """Stores the id in `request.state.request_id` before the route runs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id()
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("request-id", rid)
            await send(message)

        await self.app(scope, receive, send_with_id)
