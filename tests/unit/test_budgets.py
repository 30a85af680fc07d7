"""Budgets without NATS: the settings format, the worst-case bound, exact money."""

import json
from decimal import Decimal

import pytest

from batchbus.services.intake.budgets import (
    API_OVERHEAD_TOKENS,
    DOCUMENT_TOKENS,
    IMAGE_TOKENS,
    parse_budgets,
    worst_case_usd,
)
from batchbus.shared.budgets import spent_usd, usd
from batchbus.shared.pricing import MTOK, default_prices

PRICES = default_prices()
MODEL = "claude-sonnet-4-6"  # $3 input, $6 1-hour cache write, $15 output per MTok


def params(**extra: object) -> dict[str, object]:
    return {"model": MODEL, "max_tokens": 100,
            "messages": [{"role": "user", "content": "Is my parcel late?"}], **extra}


def size(task: dict[str, object]) -> int:
    return len(json.dumps({"task_id": "t", "params": task}).encode())


@pytest.mark.parametrize("text, expected", [
    ("", {}),
    ('{"acme": 5, "beta-2": "10.50"}', {"acme": Decimal(5), "beta-2": Decimal("10.50")}),
    (" acme=5 , beta_2=0.000001,", {"acme": Decimal(5), "beta_2": Decimal("0.000001")}),
    ('{"acme": 0.1}', {"acme": Decimal("0.1")}),  # read as a decimal, never a binary float
])
def test_budgets_are_read_from_json_or_pairs(text: str, expected: dict[str, Decimal]) -> None:
    assert parse_budgets(text) == expected


@pytest.mark.parametrize("text, words", [
    ("acme", "tenant=USD"),
    ("acme=five", "not a number"),
    ("acme=-1", ">= 0"),
    ("acme=NaN", "finite"),
    ("acme=Infinity", "finite"),
    ("a.b=1", "does not match"),
    ('["acme"]', "JSON object"),
])
def test_a_bad_budget_setting_says_what_is_wrong(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_budgets(text)


def test_worst_case_is_every_byte_a_token_plus_max_tokens_at_batch_price() -> None:
    task = params()
    tokens_in = size(task) + API_OVERHEAD_TOKENS
    full = (tokens_in * Decimal(3) + 100 * Decimal(15)) / MTOK
    assert worst_case_usd(task, size(task), PRICES, realtime=True) == full
    assert worst_case_usd(task, size(task), PRICES, realtime=False) == full / 2


def test_worst_case_bounds_what_the_api_can_bill() -> None:
    # A byte-level tokenizer cannot make more tokens than bytes, so even the worst prompt
    # (every byte its own token) with the whole max_tokens written stays within the bound.
    task = params(max_tokens=4096, system="x" * 5000)
    n = size(task)
    worst = worst_case_usd(task, n, PRICES, realtime=False)
    billed = spent_usd(PRICES, MODEL, {"input_tokens": n + 300, "output_tokens": 4096},
                       realtime=False)
    assert worst is not None and billed is not None and billed <= worst


def test_a_prompt_that_may_write_the_cache_is_priced_at_the_dearest_write() -> None:
    cached = params(system=[{"type": "text", "text": "rules",
                             "cache_control": {"type": "ephemeral", "ttl": "1h"}}])
    plain = params(system=[{"type": "text", "text": "rules",
                            "cache_contrxl": {"type": "ephemeral", "ttl": "1h"}}])
    assert size(cached) == size(plain)  # the same bytes: only the key tells them apart
    n = size(cached) + API_OVERHEAD_TOKENS
    assert worst_case_usd(cached, size(cached), PRICES, realtime=True) == \
        (n * Decimal(6) + 100 * Decimal(15)) / MTOK
    assert worst_case_usd(plain, size(plain), PRICES, realtime=True) == \
        (n * Decimal(3) + 100 * Decimal(15)) / MTOK


def test_content_named_by_url_or_file_counts_at_its_largest() -> None:
    image = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    document = {"type": "document", "source": {"type": "file", "file_id": "file_1"}}
    inline = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                          "data": "iVBORw0KGgo="}}
    nested = [{"type": "tool_result", "tool_use_id": "t1", "content": [image]}]
    for content, extra in (([image], IMAGE_TOKENS), ([document], DOCUMENT_TOKENS),
                           ([inline], 0), (nested, IMAGE_TOKENS)):
        task = params(messages=[{"role": "user", "content": content}])
        n = size(task) + API_OVERHEAD_TOKENS + extra
        assert worst_case_usd(task, size(task), PRICES, realtime=True) == \
            (n * Decimal(3) + 100 * Decimal(15)) / MTOK, content


def test_a_deeply_nested_task_is_scanned_without_recursion() -> None:
    content: object = "x"
    for _ in range(50_000):
        content = [content]
    task = params(messages=[{"role": "user", "content": content}])
    assert worst_case_usd(task, 100_000, PRICES, realtime=False) is not None


def test_an_unpriced_model_has_no_worst_case() -> None:
    assert worst_case_usd(params(model="gpt-4"), 100, PRICES, realtime=False) is None
    assert spent_usd(PRICES, "gpt-4", {"input_tokens": 1}, realtime=False) is None


def test_spent_is_exact_and_zero_for_a_request_that_never_ran() -> None:
    usage = {"input_tokens": 7, "output_tokens": 3, "cache_read_input_tokens": 11}
    assert spent_usd(PRICES, MODEL, usage, realtime=True) == Decimal("0.0000693")
    assert spent_usd(PRICES, MODEL, usage, realtime=False) == Decimal("0.00003465")
    assert spent_usd(PRICES, MODEL, None, realtime=False) == 0


def test_many_small_costs_add_up_exactly() -> None:
    # A float total drifts (0.1 + 0.2 != 0.3); the bucket's decimal strings must not.
    cost = spent_usd(PRICES, MODEL, {"input_tokens": 1, "output_tokens": 1}, realtime=False)
    assert cost == Decimal("0.000009")
    total = Decimal(0)
    for _ in range(100_000):
        total = Decimal(format(total + cost, "f"))  # as each update stores and re-reads it
    assert total == Decimal("0.9")
    assert sum([0.000009] * 100_000) != 0.9


def test_money_reads_with_every_digit_and_no_exponent() -> None:
    assert usd(Decimal("0.00000150")) == "$0.0000015"
    assert usd(Decimal("5E+1")) == "$50"
    assert usd(Decimal(0)) == "$0"
