"""Price tables: dated model ids, cache reads and writes, unknown models, bad input."""

from __future__ import annotations

import pytest

from agentguard import AgentGuardWarning, InvalidInputError
from agentguard.pricing import LIST_PRICES_2025_11, Price, Prices, Usage


def test_cost_is_tokens_times_the_price_per_million() -> None:
    prices = Prices({"gpt-5": Price(1.25, 10.0, cached_input=0.125)})
    usage = Usage(input_tokens=1_000_000, output_tokens=100_000, cached_input_tokens=400_000)
    # 600k fresh input at 1.25, 400k cached at 0.125, 100k output at 10
    assert prices.cost("gpt-5", usage) == pytest.approx(0.75 + 0.05 + 1.0)


def test_cache_writes_use_their_price_or_the_input_price() -> None:
    usage = Usage(input_tokens=2_000_000, cache_write_input_tokens=1_000_000, output_tokens=0)
    assert Price(3.0, 15.0, cache_write=3.75).cost(usage) == pytest.approx(3.0 + 3.75)
    assert Price(3.0, 15.0).cost(usage) == pytest.approx(6.0)


@pytest.mark.parametrize(
    ("model", "priced_as"),
    [
        ("gpt-5-2025-08-07", "gpt-5"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-opus-4-1@20250805", "claude-opus-4-1"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
    ],
)
def test_dated_model_ids_find_their_model(model: str, priced_as: str) -> None:
    assert LIST_PRICES_2025_11.price(model) == LIST_PRICES_2025_11.price(priced_as) is not None


def test_a_longer_model_name_is_not_priced_as_its_prefix() -> None:
    prices = Prices({"gpt-5": (1.25, 10.0)})
    assert prices.price("gpt-5-pro") is None
    assert "gpt-5-pro" not in prices and "gpt-5-2025-08-07" in prices


def test_an_exact_entry_wins_over_the_dated_match_and_the_fallback() -> None:
    prices = Prices(
        {"gpt-5-2025-08-07": (9.0, 9.0), "mine": (1.0, 2.0, 0.5)}, fallback=LIST_PRICES_2025_11
    )
    assert prices.price("gpt-5-2025-08-07") == Price(9.0, 9.0)
    assert prices.price("gpt-5-mini") == LIST_PRICES_2025_11.price("gpt-5-mini")
    assert prices.price("mine") == Price(1.0, 2.0, cached_input=0.5)


def test_an_unknown_model_costs_none_and_warns_once() -> None:
    prices = Prices({})
    with pytest.warns(AgentGuardWarning, match="no price for model 'mystery-1'"):
        assert prices.cost("mystery-1", Usage(10, 10)) is None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert prices.cost("mystery-1", Usage(10, 10)) is None  # no second warning


@pytest.mark.parametrize(
    ("table", "field"),
    [
        ({"m": (-1.0, 1.0)}, "prices['m'].input"),
        ({"m": (1.0, float("nan"))}, "prices['m'].output"),
        ({"m": "cheap"}, "prices['m']"),
        ({"": (1.0, 1.0)}, "prices"),
    ],
)
def test_bad_prices_name_the_field(table: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInputError) as error:
        Prices(table)  # type: ignore[arg-type]
    assert error.value.field == field


def test_prices_of_takes_a_table_a_mapping_or_nothing() -> None:
    assert Prices.of(LIST_PRICES_2025_11) is LIST_PRICES_2025_11
    assert Prices.of({"m": (1.0, 2.0)}).price("m") == Price(1.0, 2.0)
    assert Prices.of(None).price("gpt-5") is None
    with pytest.raises(InvalidInputError, match="prices"):
        Prices.of(["gpt-5"])  # type: ignore[arg-type]
