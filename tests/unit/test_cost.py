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


def test_every_priced_model_of_the_catalog_has_every_rate() -> None:
    catalog = default_prices().catalog
    priced = [spec for spec in catalog.models.values() if spec.rates is not None]
    assert len(priced) >= 15
    for spec in priced:
        assert spec.rates is not None and all(rate >= 0 for rate in spec.rates.values())


@pytest.mark.parametrize("model, rates", [
    ("claude-fable-5-2", ("8", "10", "16", "0.20", "40")),
    ("claude-opus-5-5", ("4", "5", "8", "0.20", "20")),
    ("claude-sonnet-5-5", ("2", "2.50", "4", "0.10", "10")),
    ("claude-haiku-5-5", ("0.10", "0.125", "0.20", "0.01", "0.50")),
    ("claude-sonnet-4-6", ("3", "3.75", "6", "0.30", "15")),
])
def test_each_kind_of_token_is_priced_at_its_rate(model: str, rates: tuple[str, ...]) -> None:
    usage = {"input_tokens": 1000, "output_tokens": 100_000, "cache_creation_input_tokens": 3000,
             "cache_read_input_tokens": 40_000,
             "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000}}
    tokens = TokenCounts.from_usage(usage)
    assert tokens.prompt == 44_000  # below Haiku 5.5's second band
    r_in, r_5m, r_1h, r_read, r_out = (Decimal(r) for r in rates)
    expected = (1000 * r_in + 1000 * r_5m + 2000 * r_1h + 40_000 * r_read
                + 100_000 * r_out) / Decimal(1_000_000)
    assert default_prices().realtime_usd(model, tokens) == expected


def test_haiku_5_5_bills_every_token_of_a_prompt_above_100k_at_five_times() -> None:
    prices = default_prices()
    at_limit = TokenCounts(input=60_000, cache_read=40_000, output=1000)  # exactly 100K
    above = at_limit._replace(input=60_001)
    base = prices.realtime_usd("claude-haiku-5-5", at_limit)
    assert base == (60_000 * Decimal("0.10") + 40_000 * Decimal("0.01")
                    + 1000 * Decimal("0.50")) / Decimal(1_000_000)
    assert prices.realtime_usd("claude-haiku-5-5", above) == (
        60_001 * Decimal("0.50") + 40_000 * Decimal("0.05")
        + 1000 * Decimal("2.50")) / Decimal(1_000_000)
    # Other models have one band.
    assert prices.realtime_usd("claude-sonnet-4-6", above) == (
        60_001 * 3 + 40_000 * Decimal("0.30") + 1000 * 15) / Decimal(1_000_000)


def test_us_only_inference_costs_one_point_one_times() -> None:
    usage = {"input_tokens": 1_000_000, "output_tokens": 0}
    prices = default_prices()
    plain = prices.cost("claude-sonnet-4-6", TokenCounts.from_usage(usage))
    us = prices.cost("claude-sonnet-4-6", TokenCounts.from_usage(usage | {"inference_geo": "us"}))
    assert plain is not None and us is not None
    assert (plain.realtime_usd, plain.batch_usd) == (3.0, 1.5)
    assert (us.realtime_usd, us.batch_usd) == (3.3, 1.65)
