"""What a model call cost: token usage times a price table (USD per million tokens).

Usage::

    from agentguard.pricing import LIST_PRICES_2025_11, Price, Prices

    prices = Prices({"gpt-5": Price(input=1.25, output=10.0, cached_input=0.125)})
    prices = Prices({"my-finetune": (3.0, 12.0)}, fallback=LIST_PRICES_2025_11)
    prices.cost("gpt-5-2025-08-07", Usage(input_tokens=1200, output_tokens=300))  # 0.0045

A model id is looked up as given, then without a trailing date or version stamp
(``gpt-5-2025-08-07`` -> ``gpt-5``, ``claude-sonnet-4-5-20250929`` -> ``claude-sonnet-4-5``,
``claude-opus-4-1@20250805`` -> ``claude-opus-4-1``), never by a shorter prefix: ``gpt-5-pro``
is not priced as ``gpt-5``. A model with no price costs ``None``: its tokens are still
recorded, and ``cost`` warns once per model.
"""

from __future__ import annotations

import math
import re
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeAlias

from .errors import AgentGuardWarning, InvalidInputError

__all__ = ["LIST_PRICES_2025_11", "Price", "PriceTable", "Prices", "Usage"]


@dataclass(frozen=True, slots=True)
class Usage:
    """The tokens of one model call, as the provider reported them.

    ``input_tokens`` counts every input token, those read from and written to a prompt cache
    included; ``cached_input_tokens`` and ``cache_write_input_tokens`` are the parts of it
    that were read from and written to the cache. ``model`` is the model that answered (the
    response's, often a dated id), ``response_id`` the provider's id of the response.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    model: str | None = None
    response_id: str | None = None


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens: input, output, and optionally cache reads and cache writes.

    Cache reads default to the input price, cache writes too (Anthropic bills them at 1.25x
    the input price for a 5-minute cache: say so with ``cache_write``).
    """

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None

    def __post_init__(self) -> None:
        for name in ("input", "output", "cached_input", "cache_write"):
            value = getattr(self, name)
            if value is None and name in ("cached_input", "cache_write"):
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or math.isnan(value)
                or math.isinf(value)
                or value < 0
            ):
                raise InvalidInputError(
                    name, f"must be a non-negative number of USD per million tokens; got {value!r}"
                )

    def cost(self, usage: Usage) -> float:
        """What ``usage`` costs at this price, in USD."""
        cached = min(usage.cached_input_tokens, usage.input_tokens)
        written = min(usage.cache_write_input_tokens, usage.input_tokens - cached)
        plain = usage.input_tokens - cached - written
        read_price = self.input if self.cached_input is None else self.cached_input
        write_price = self.input if self.cache_write is None else self.cache_write
        return (
            plain * self.input
            + cached * read_price
            + written * write_price
            + usage.output_tokens * self.output
        ) / 1_000_000


PriceTable: TypeAlias = Mapping[str, "Price | tuple[float, float] | tuple[float, float, float]"]

# A trailing date or version stamp: -2025-08-07, -20250929, @20250805, -v1:0, -latest.
_STAMP = re.compile(r"(?:[-@](?:\d{4}-\d{2}-\d{2}|\d{8})|-latest)?(?:-v\d+(?::\d+)?)?$")


class Prices:
    """A price table: model id -> ``Price``, with an optional table to fall back on."""

    def __init__(self, table: PriceTable, *, fallback: Prices | None = None) -> None:
        if not isinstance(table, Mapping):
            raise InvalidInputError(
                "prices", f"must map model ids to prices; got {type(table).__name__}"
            )
        if fallback is not None and not isinstance(fallback, Prices):
            raise InvalidInputError("fallback", f"must be Prices; got {type(fallback).__name__}")
        self._table = {_model_id(model): _price(model, price) for model, price in table.items()}
        self.fallback = fallback
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    @classmethod
    def of(cls, prices: Prices | PriceTable | None) -> Prices:
        """``prices`` as ``Prices`` (a mapping becomes a table; ``None`` an empty one)."""
        if isinstance(prices, Prices):
            return prices
        return cls({} if prices is None else prices)

    def price(self, model: str) -> Price | None:
        """The price of ``model`` (as given, then without its date stamp), or ``None``."""
        found = self._table.get(model)
        if found is None:
            bare = _STAMP.sub("", model)
            found = self._table.get(bare) if bare else None
        if found is None and self.fallback is not None:
            return self.fallback.price(model)
        return found

    def cost(self, model: str | None, usage: Usage) -> float | None:
        """What ``usage`` of ``model`` cost in USD; ``None`` (and a warning, once per model)
        when the table has no price for it."""
        price = None if model is None else self.price(model)
        if price is not None:
            return price.cost(usage)
        name = model or "(unnamed)"
        with self._lock:
            first = name not in self._warned
            self._warned.add(name)
        if first:
            warnings.warn(
                f"agentguard has no price for model {name!r}: its tokens are recorded but not "
                f"its cost, so budget rules do not see it; pass prices= with a price for it",
                AgentGuardWarning,
                stacklevel=2,
            )
        return None

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self.price(model) is not None

    def __repr__(self) -> str:
        more = f", fallback={self.fallback!r}" if self.fallback is not None else ""
        return f"<Prices {len(self._table)} models{more}>"


def _model_id(model: object) -> str:
    if not isinstance(model, str) or not model:
        raise InvalidInputError("prices", f"model ids must be non-empty strings; got {model!r}")
    return model


def _price(model: str, price: object) -> Price:
    if isinstance(price, Price):
        return price
    if isinstance(price, tuple) and len(price) in (2, 3):
        try:
            return Price(*price)
        except InvalidInputError as exc:
            raise InvalidInputError(f"prices[{model!r}].{exc.field}", exc.message) from None
    raise InvalidInputError(
        f"prices[{model!r}]",
        f"must be a Price or (input, output[, cached_input]) in USD per million tokens; "
        f"got {price!r}",
    )


LIST_PRICES_2025_11 = Prices(
    {
        # OpenAI, standard tier (not Batch, Flex or Priority).
        "gpt-5": Price(1.25, 10.0, cached_input=0.125),
        "gpt-5-mini": Price(0.25, 2.0, cached_input=0.025),
        "gpt-5-nano": Price(0.05, 0.40, cached_input=0.005),
        "gpt-4.1": Price(2.0, 8.0, cached_input=0.50),
        "gpt-4.1-mini": Price(0.40, 1.60, cached_input=0.10),
        "gpt-4.1-nano": Price(0.10, 0.40, cached_input=0.025),
        "gpt-4o": Price(2.50, 10.0, cached_input=1.25),
        "gpt-4o-mini": Price(0.15, 0.60, cached_input=0.075),
        "o3": Price(2.0, 8.0, cached_input=0.50),
        "o4-mini": Price(1.10, 4.40, cached_input=0.275),
        "text-embedding-3-small": Price(0.02, 0.0),
        "text-embedding-3-large": Price(0.13, 0.0),
        # Anthropic: cache reads at 0.1x the input price, 5-minute cache writes at 1.25x.
        "claude-opus-4-5": Price(5.0, 25.0, cached_input=0.50, cache_write=6.25),
        "claude-opus-4-1": Price(15.0, 75.0, cached_input=1.50, cache_write=18.75),
        "claude-opus-4": Price(15.0, 75.0, cached_input=1.50, cache_write=18.75),
        "claude-opus-4-0": Price(15.0, 75.0, cached_input=1.50, cache_write=18.75),
        "claude-sonnet-4-5": Price(3.0, 15.0, cached_input=0.30, cache_write=3.75),
        "claude-sonnet-4": Price(3.0, 15.0, cached_input=0.30, cache_write=3.75),
        "claude-sonnet-4-0": Price(3.0, 15.0, cached_input=0.30, cache_write=3.75),
        "claude-haiku-4-5": Price(1.0, 5.0, cached_input=0.10, cache_write=1.25),
        "claude-3-5-haiku": Price(0.80, 4.0, cached_input=0.08, cache_write=1.0),
    }
)
"""List prices in USD per million tokens, as the providers published them in November 2025.

Shipped as a convenience and dated on purpose: prices change and new models appear, so
verify these against the provider's pricing page before relying on them, and pass your own
table (``Prices({...}, fallback=LIST_PRICES_2025_11)``) for what differs or is missing. Not
used unless passed: a guard without ``prices=`` records tokens and no cost.
"""
