"""Cost of one result at batch and at real-time prices, from the model catalog.

Money is computed in Decimal so sums over many results are exact; a model without a price
gets none (reported, never guessed). A request's rates depend on its prompt (Haiku 5.5
bills every token of a prompt above 100K at 5x) and on US-only inference (1.1x).
"""

from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any, NamedTuple

from batchbus.shared.catalog import Catalog, default_catalog
from batchbus.shared.models import Cost, CostFields

MTOK = Decimal(1_000_000)


class TokenCounts(NamedTuple):  # built per result: a tuple builds in half a dataclass's time
    input: int = 0
    output: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    cache_read: int = 0
    us_only: bool = False  # served under `inference_geo: "us"`

    @property
    def prompt(self) -> int:
        """The prompt's size as a pricing band counts it: input, cache writes and reads."""
        return self.input + self.cache_write_5m + self.cache_write_1h + self.cache_read

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
                   cache_read=int(usage.get("cache_read_input_tokens") or 0),
                   us_only=usage.get("inference_geo") == "us")


@dataclass(frozen=True)
class PriceTable:
    catalog: Catalog

    @property
    def batch_discount(self) -> Decimal:
        return self.catalog.batch_discount

    def rates(self, model: str, prompt_tokens: int = 0,
              us_only: bool = False) -> dict[str, Decimal] | None:
        """USD per million tokens of each kind for one request, or None without a price."""
        spec = self.catalog.spec(model)
        if spec is None or spec.rates is None:
            return None
        factor = Decimal(1)
        for band in spec.bands:
            if prompt_tokens > band.above_prompt_tokens:
                factor = max(factor, band.multiplier)
        if us_only:
            factor *= self.catalog.us_only_multiplier
        return dict(spec.rates) if factor == 1 else {k: v * factor for k, v in spec.rates.items()}

    def realtime_usd(self, model: str, tokens: TokenCounts) -> Decimal | None:
        rates = self.rates(model, tokens.prompt, tokens.us_only)
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



@cache
def default_prices() -> PriceTable:
    """Prices of the catalog shipped with batchbus."""
    return PriceTable(default_catalog())
