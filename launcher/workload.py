"""The demo's workload: customer-support tickets to classify, deterministic from a seed."""

import json
import random
from typing import Any

MODEL = "claude-sonnet-5-5"
LABELS = ("billing", "shipping", "technical", "account", "refund")
SYSTEM = ("You triage customer-support tickets for an online shop. Classify the ticket into "
          f"exactly one of: {', '.join(LABELS)}. Answer with the label, then one short "
          "sentence saying why.")

OPENINGS = ("Hi,", "Hello team,", "Good morning,", "To whom it may concern,", "Hey,")
PROBLEMS = {
    "billing": ("I was charged twice for order #{n}.", "My invoice {n} shows the wrong VAT.",
                "The card payment for order #{n} failed but money left my account."),
    "shipping": ("Order #{n} has not arrived after {d} days.", "The tracking for #{n} has "
                 "not moved since {d} days.", "Parcel #{n} was delivered to the wrong address."),
    "technical": ("The app crashes when I open my orders.", "I cannot upload a photo for "
                  "my return, it says error {n}.", "The checkout page is blank in my browser."),
    "account": ("I cannot log in since I changed my phone.", "Please delete my account and "
                "data.", "I never got the email to confirm my address."),
    "refund": ("I returned order #{n} {d} days ago and have no refund yet.", "How long does "
               "a refund to PayPal take?", "The refund for #{n} was smaller than the price."),
}
CLOSINGS = ("Thanks.", "Please help!", "Regards, {name}", "This is urgent.", "Cheers, {name}")
NAMES = ("Ana", "Ben", "Chen", "Dara", "Emeka", "Fatima", "Greta", "Hiro", "Ines", "Jon")


def ticket_text(rng: random.Random) -> str:
    label = rng.choice(LABELS)
    problem = rng.choice(PROBLEMS[label]).format(n=rng.randint(10000, 99999),
                                                 d=rng.randint(3, 30))
    closing = rng.choice(CLOSINGS).format(name=rng.choice(NAMES))
    return f"{rng.choice(OPENINGS)} {problem} {closing}"


def tickets(count: int, seed: int = 7, flaky_every: int = 100) -> list[dict[str, Any]]:
    """`count` tasks; every `flaky_every`-th asks the emulator for one transient failure."""
    rng = random.Random(seed)
    tasks = []
    for i in range(count):
        params: dict[str, Any] = {
            "model": MODEL, "max_tokens": 200, "system": SYSTEM,
            "messages": [{"role": "user", "content": ticket_text(rng)}]}
        if flaky_every and i % flaky_every == 0:
            # Understood by the emulator only; the real API treats it as an opaque user id.
            params["metadata"] = {"user_id": "emulate:errored:overloaded_error:first=1"}
        tasks.append({"task_id": f"ticket-{i:06d}", "params": params,
                      "metadata": {"ticket": i, "queue": "support"}})
    return tasks


def malformed() -> list[bytes]:
    """A few broken submissions, to show that each gets a clear rejection."""
    good = tickets(1, flaky_every=0)[0]
    return [
        b'{"task_id": "ticket-broken-json", ',
        json.dumps({**good, "task_id": "ticket with spaces"}).encode(),
        json.dumps({**good, "task_id": "ticket-no-model",
                    "params": {"max_tokens": 10, "messages": []}}).encode(),
        json.dumps({**good, "task_id": "ticket-streaming",
                    "params": {**good["params"], "stream": True}}).encode(),
    ]
