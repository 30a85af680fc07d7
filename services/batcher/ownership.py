"""Whether the task messages the batcher holds are still its own.

They stay ours while in_progress() keeps resetting their ack wait. A process paused past it
(SIGSTOP, a stalled VM, a long GC pause) wakes to find that NATS may have handed them to
another replica, which may have billed them already: submitting them then would bill them
twice, so they are dropped instead and NATS redelivers them.
"""

import asyncio
from collections.abc import Iterable
from time import monotonic

from nats.aio.msg import Msg

# Keep-alives count as lost well before the ack wait ends: the server times it from when
# it received the last in_progress, a little after we sent it.
MARGIN = 0.75


class Ownership:
    def __init__(self, ack_wait: float) -> None:
        self.limit = ack_wait * MARGIN
        self.kept_at = monotonic()  # when the held messages' ack wait last (re)started

    def owned(self) -> bool:
        return self.owned_since(self.kept_at)

    def owned_since(self, delivered_after: float) -> bool:
        """Whether a message delivered after `delivered_after` (monotonic) is still ours."""
        return monotonic() - delivered_after < self.limit

    def restart(self, delivered_after: float) -> None:
        """Held messages are new: none was delivered before `delivered_after` (monotonic)."""
        self.kept_at = delivered_after

    async def keep(self, msgs: Iterable[Msg]) -> bool:
        """Resets the ack wait of `msgs` if they are still ours; False once they are not
        (then no keep-alive can make them ours again)."""
        if not self.owned():
            return False
        sent_at = monotonic()
        await asyncio.gather(*(msg.in_progress() for msg in msgs))
        self.kept_at = sent_at
        return True
