"""batchbus: a NATS message bus in front of the Anthropic Message Batches API.

The public API for users: publish Tasks and read Results with `BatchbusClient`, check a
webhook's signature with `verify_signature`. The services, the local emulator and the
launcher live in the subpackages and need the `services` / `local` extras.
"""

from batchbus.client import BatchbusClient
from batchbus.shared.models import Result, Task
from batchbus.shared.webhooks import verify_signature

__all__ = ["BatchbusClient", "Result", "Task", "verify_signature"]
