"""Cost of one result at batch and at real-time prices, from the price data file.

Money is computed in Decimal so sums over many results are exact; unknown models get no
price (reported, never guessed). Haiku 5.5's >100K-token band is not modelled yet.
"""

import json
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any, NamedTuple

from batchbus.shared.models import Cost, CostFields

MTOK = Decimal(1_000_000)


class TokenCounts(NamedTuple):  # built per result: a tuple builds in half a dataclass's time
    input: int = 0
    output: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    cache_read: int = 0

    @classmethod
    def from_usage(cls, usage: dict[str, Any]) -> "TokenCounts":
        """Reads an API `usage` object; cache writes without a TTL split count as 5-minute."""
        split = usage.get("cache_creation") or {}
        w5 = int(split.get("ephemeral_5m_input_tokens") or 0)
        w1 = int(split.get("ephemeral_1h_input_tokens") or 0)
        total_writes = int(usage.get("cache_creation_input_tokens") or 0)
        if w5 + w1 != total_writes:
            w5, w1 = total_writes, 0
        return cls(input=int(usage.get("input_tokens") or 0),
                   output=int(usage.get("output_tokens") or 0),
                   cache_write_5m=w5, cache_write_1h=w1,
                   cache_read=int(usage.get("cache_read_input_tokens") or 0))


@dataclass(frozen=True)
class PriceTable:
    models: dict[str, dict[str, Decimal]]
    aliases: dict[str, str]
    batch_discount: Decimal

    def rates(self, model: str) -> dict[str, Decimal] | None:
        return self.models.get(self.aliases.get(model, model))

    def realtime_usd(self, model: str, tokens: TokenCounts) -> Decimal | None:
        rates = self.rates(model)
        if rates is None:
            return None
        total = (tokens.input * rates["input"] + tokens.output * rates["output"]
                 + tokens.cache_write_5m * rates["cache_write_5m"]
                 + tokens.cache_write_1h * rates["cache_write_1h"]
                 + tokens.cache_read * rates["cache_read"])
        return total / MTOK

    def cost(self, model: str, tokens: TokenCounts) -> Cost | None:
        fields = self.cost_fields(model, tokens)
        return None if fields is None else Cost(**fields)

    def cost_fields(self, model: str, tokens: TokenCounts) -> CostFields | None:
        """`cost`'s fields, as a result's JSON carries them (the notifier builds no Cost)."""
        realtime = self.realtime_usd(model, tokens)
        if realtime is None:
            return None
        batch = realtime * self.batch_discount
        return {"batch_usd": float(batch), "realtime_usd": float(realtime),
                "saved_usd": float(realtime - batch)}


def load_prices(text: str) -> PriceTable:
    raw = json.loads(text)
    models = {name: {k: Decimal(v) for k, v in row.items()} for name, row in raw["models"].items()}
    return PriceTable(models=models, aliases=dict(raw.get("aliases", {})),
                      batch_discount=Decimal(raw["batch_discount"]))


@cache
def default_prices() -> PriceTable:
    return load_prices(resources.files("batchbus.shared").joinpath("data/prices.json").read_text())
