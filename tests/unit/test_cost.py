"""Cost from usage and the price file, including the article's corrected example."""

from decimal import Decimal

import pytest
from pydantic import TypeAdapter

from batchbus.shared.models import CostFields
from batchbus.shared.pricing import TokenCounts, default_prices


def total(model: str, tokens: TokenCounts, n: int) -> tuple[Decimal, Decimal]:
    """Sums n per-result cost fields the way a user would, from the published floats."""
    cost = default_prices().cost(model, tokens)
    assert cost is not None
    batch = sum((Decimal(str(cost.batch_usd)) for _ in range(n)), Decimal(0))
    realtime = sum((Decimal(str(cost.realtime_usd)) for _ in range(n)), Decimal(0))
    return batch, realtime


@pytest.mark.parametrize("input_tokens, realtime, batch", [
    (500, Decimal("45.00"), Decimal("22.50")),  # the article's tickets, done right
    (1500, Decimal("75.00"), Decimal("37.50")),  # what the article's figures need
])
def test_ten_thousand_tickets(input_tokens: int, realtime: Decimal, batch: Decimal) -> None:
    got_batch, got_realtime = total("claude-sonnet-4-6",
                                    TokenCounts(input=input_tokens, output=200), 10_000)
    assert got_realtime == realtime
    assert got_batch == batch


def test_cache_tokens_are_priced_by_kind() -> None:
    usage = {"input_tokens": 100, "output_tokens": 10, "cache_creation_input_tokens": 1000,
             "cache_read_input_tokens": 2000,
             "cache_creation": {"ephemeral_5m_input_tokens": 400, "ephemeral_1h_input_tokens": 600}}
    tokens = TokenCounts.from_usage(usage)
    realtime = default_prices().realtime_usd("claude-sonnet-4-6", tokens)
    # 100*3 + 10*15 + 400*3.75 + 600*6 + 2000*0.3 per million
    assert realtime == Decimal("6150") / Decimal(1_000_000)


def test_cache_writes_without_a_split_count_as_five_minute_writes() -> None:
    tokens = TokenCounts.from_usage({"input_tokens": 1, "output_tokens": 1,
                                     "cache_creation_input_tokens": 50})
    assert (tokens.cache_write_5m, tokens.cache_write_1h) == (50, 0)


def test_dated_ids_resolve_and_unknown_models_get_no_price() -> None:
    prices = default_prices()
    tokens = TokenCounts(input=10, output=10)
    assert prices.cost("claude-haiku-4-5-20251001", tokens) == prices.cost("claude-haiku-4-5",
                                                                            tokens)
    assert prices.cost("claude-imaginary-9", tokens) is None


def test_cost_fields_are_a_costs_fields() -> None:
    # The notifier publishes cost_fields' dict as a Result's `cost`, typed as CostFields.
    fields = default_prices().cost_fields("claude-sonnet-4-6", TokenCounts(input=10, output=1))
    assert fields is not None and list(fields) == list(CostFields.__annotations__)
    assert TypeAdapter(CostFields).validate_python(fields, strict=True) == fields
