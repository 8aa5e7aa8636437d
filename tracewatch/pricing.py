"""Model prices, so an event without ``cost_usd`` still has a cost.

The contract lets apps leave ``cost_usd`` out; tracewatch then computes it from
the event's ``model`` and token counts with a price table: the one shipped in
``tracewatch/data/prices.yaml`` (list prices on the date it names, defaults
meant to be overridden), plus an optional file of your own
(``TRACEWATCH_PRICING_FILE``, same format) whose entries win::

    as_of: 2025-10-15              # optional: when the prices were taken
    unit: usd_per_million_tokens   # or usd_per_token
    models:
      - match: "gpt-4o-mini*"      # an exact name or an fnmatch glob, or a list of them
        input: 0.15                # USD per unit of input (prompt) tokens
        output: 0.60               # USD per unit of output (completion) tokens

Which entry prices a model: names and patterns compare case-insensitively.
Every matching entry of the override file beats every shipped one. Within one
file the most specific pattern wins: the one with the most literal
(non-wildcard) characters, an exact name before a glob of the same length, then
the earlier entry; so ``gpt-4o-mini*`` prices ``gpt-4o-mini-2024-07-18`` even
though ``gpt-4o*`` matches it too. A name with a provider prefix
(``openai/gpt-4o``) that no entry matches is tried again without the prefix.

Cost = input_tokens * input price + output_tokens * output price. When only one
of the two counts is known the other counts as zero, so the cost is a lower
bound; an embeddings call, which has only input tokens, is priced exactly.

Pure: the only I/O is reading the two files when the table is built.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from fnmatch import fnmatchcase
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
import numpy.typing as npt
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError

from tracewatch.errors import ConfigError
from tracewatch.schemas.rules import _format, _message, _walk, _yaml_type, compose_yaml

if TYPE_CHECKING:
    from tracewatch.config import PricingSettings

__all__ = ["SHIPPED_PRICES", "Price", "PriceTable", "parse_prices"]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: The shipped table, inside the installed package.
SHIPPED_PRICES = "tracewatch/data/prices.yaml"
_PER_TOKEN_SCALE = {"usd_per_million_tokens": 1.0, "usd_per_token": 1_000_000.0}
_MAX_REPORTED = 10
_WILDCARDS = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class Price:
    """What one model costs, and which entry of which file said so."""

    input_usd_per_mtok: float
    output_usd_per_mtok: float
    pattern: str
    source: str

    def cost(self, input_tokens: float | None, output_tokens: float | None) -> float:
        """USD for a call; a missing count is zero (see the module docstring)."""
        tokens_in = 0.0 if input_tokens is None or math.isnan(input_tokens) else input_tokens
        tokens_out = 0.0 if output_tokens is None or math.isnan(output_tokens) else output_tokens
        return (
            tokens_in * self.input_usd_per_mtok + tokens_out * self.output_usd_per_mtok
        ) / 1_000_000.0


@dataclass(frozen=True, slots=True)
class _Rule:
    pattern: str  # lower case
    glob: bool
    literals: int
    order: int
    price: Price

    def matches(self, name: str) -> bool:
        return fnmatchcase(name, self.pattern) if self.glob else name == self.pattern


class PriceTable:
    """Prices by model name, with each distinct name resolved once (a bounded cache).

    ``fill_costs`` is the batch call for the worker's hot path; ``price_for`` and
    ``cost_of`` answer for one model.
    """

    def __init__(
        self,
        shipped: Sequence[_Rule] = (),
        overrides: Sequence[_Rule] = (),
        *,
        cache_size: int = 4096,
    ) -> None:
        self._tiers = (_by_specificity(overrides), _by_specificity(shipped))
        self._resolve: functools._lru_cache_wrapper[Price | None] = functools.lru_cache(
            maxsize=cache_size
        )(self._scan)

    @classmethod
    def load(cls, override: Path | None = None, *, cache_size: int = 4096) -> PriceTable:
        """The shipped table, overridden by ``override`` when given."""
        shipped = parse_prices(_shipped_text(), SHIPPED_PRICES)
        extra = _read(override) if override is not None else []
        return cls(shipped, extra, cache_size=cache_size)

    @classmethod
    def from_settings(cls, settings: PricingSettings) -> PriceTable:
        return cls.load(settings.file)

    def cache_info(self) -> functools._CacheInfo:
        """Hits, misses and size of the per-model-name cache (bounded by ``cache_size``)."""
        return self._resolve.cache_info()

    def price_for(self, model: str | None) -> Price | None:
        """The price of ``model``, or None when no entry matches (or there is no model)."""
        return self._resolve(model)

    def cost_of(
        self, model: str | None, input_tokens: float | None, output_tokens: float | None
    ) -> float | None:
        """USD for one call; None without a price or without any token count."""
        price = self._resolve(model)
        unknown_in = input_tokens is None or math.isnan(input_tokens)
        unknown_out = output_tokens is None or math.isnan(output_tokens)
        if price is None or (unknown_in and unknown_out):
            return None
        return price.cost(input_tokens, output_tokens)

    def fill_costs(
        self,
        models: Sequence[str | None],
        cost_usd: FloatArray,
        input_tokens: FloatArray,
        output_tokens: FloatArray,
    ) -> tuple[FloatArray, BoolArray]:
        """Complete a batch's costs: ``(costs, computed)``, missing numbers being NaN.

        Row i gets a computed cost when ``cost_usd[i]`` is NaN, ``models[i]`` has
        a price and at least one of its token counts is known; ``computed[i]``
        says so. Every other row keeps its cost (provided, or NaN). The inputs
        are not modified.
        """
        costs = np.array(cost_usd, dtype=np.float64, copy=True)
        tokens_in = np.asarray(input_tokens, dtype=np.float64)
        tokens_out = np.asarray(output_tokens, dtype=np.float64)
        if not len(models) == costs.shape[0] == tokens_in.shape[0] == tokens_out.shape[0]:
            raise ValueError("fill_costs: models and the three arrays must have one length")
        computed = np.isnan(costs) & ~(np.isnan(tokens_in) & np.isnan(tokens_out))
        rows = np.flatnonzero(computed)
        if rows.size == 0:
            return costs, computed
        resolve = self._resolve
        prices = [resolve(models[i]) for i in rows.tolist()]
        nan = math.nan
        per_in = np.fromiter(
            (nan if p is None else p.input_usd_per_mtok for p in prices), np.float64, len(prices)
        )
        per_out = np.fromiter(
            (nan if p is None else p.output_usd_per_mtok for p in prices), np.float64, len(prices)
        )
        priced = ~np.isnan(per_in)
        used_in = np.nan_to_num(tokens_in[rows], nan=0.0)
        used_out = np.nan_to_num(tokens_out[rows], nan=0.0)
        values = (used_in * per_in + used_out * per_out) / 1_000_000.0
        costs[rows[priced]] = values[priced]
        computed[rows[~priced]] = False
        return costs, computed

    def _scan(self, model: str | None) -> Price | None:
        if not model:
            return None
        name = model.strip().lower()
        names = [name]
        if "/" in name:
            names.append(name.rsplit("/", 1)[1])
        for tier in self._tiers:
            for candidate in names:
                for rule in tier:
                    if rule.matches(candidate):
                        return rule.price
        return None


def _by_specificity(rules: Iterable[_Rule]) -> tuple[_Rule, ...]:
    return tuple(sorted(rules, key=lambda r: (-r.literals, r.glob, r.order)))


# --------------------------------------------------------------------------- the file


def _usd(value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{value!r} is not a price; use a number ≥ 0 (USD), e.g. 0.15")
    return value


def _patterns(value: object) -> object:
    return [value] if isinstance(value, str) else value


def _non_empty(values: list[str]) -> list[str]:
    if not values:
        raise ValueError('no pattern; give a model name or glob, e.g. "gpt-4o-mini*"')
    for value in values:
        if not value.strip():
            raise ValueError('an empty pattern matches nothing; e.g. "gpt-4o-mini*"')
    return values


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    match: Annotated[list[str], BeforeValidator(_patterns), AfterValidator(_non_empty)]
    input: Annotated[float, AfterValidator(_usd)]
    output: Annotated[float, AfterValidator(_usd)]


class _PriceFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    as_of: date | str | None = None
    unit: Literal["usd_per_million_tokens", "usd_per_token"] = "usd_per_million_tokens"
    models: list[_Entry]


_ALLOWED_KEYS = {"": ["as_of", "unit", "models"], "entry": ["match", "input", "output"]}


def parse_prices(text: str, source: str = "<prices>") -> list[_Rule]:
    """Validate price-table YAML; ``ConfigError`` names the file, line, column and field."""
    data, marks = _located_yaml(text, source)
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}:1:1: (top level): expected a mapping with 'models:' "
            f"(and optional 'as_of:', 'unit:'), got a {_yaml_type(data)}"
        )
    try:
        parsed = _PriceFile.model_validate(data)
    except ValidationError as exc:
        _raise_located(exc, source, marks)
    scale = _PER_TOKEN_SCALE[parsed.unit]
    rules: list[_Rule] = []
    for entry in parsed.models:
        for pattern in entry.match:
            price = Price(entry.input * scale, entry.output * scale, pattern, source)
            rules.append(_rule(pattern, len(rules), price))
    return rules


def _rule(pattern: str, order: int, price: Price) -> _Rule:
    lowered = pattern.strip().lower()
    glob = any(c in _WILDCARDS for c in lowered)
    literals = sum(c not in _WILDCARDS for c in lowered)
    return _Rule(lowered, glob, literals, order, price)


def _read(path: Path) -> list[_Rule]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: the price file is not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the price file ({exc.strerror or exc}); "
            "check TRACEWATCH_PRICING_FILE"
        ) from None
    return parse_prices(text, str(path))


def _shipped_text() -> str:
    return resources.files("tracewatch").joinpath("data/prices.yaml").read_text("utf-8")


def _located_yaml(
    text: str, source: str
) -> tuple[object, dict[tuple[str | int, ...], tuple[int, int]]]:
    """The YAML data and the line/column of every key and list item in it."""
    root, data = compose_yaml(text, source)
    marks: dict[tuple[str | int, ...], tuple[int, int]] = {}
    duplicates: list[str] = []
    if root is not None:
        for path, line, col, duplicate in _walk(root, ()):
            if duplicate:
                duplicates.append(
                    f"{source}:{line}:{col}: key {path[-1]!r} appears twice; keep one"
                )
            marks.setdefault(path, (line, col))
    if duplicates:
        raise ConfigError("\n".join(duplicates[:_MAX_REPORTED]))
    return data, marks


def _raise_located(
    exc: ValidationError, source: str, marks: Mapping[tuple[str | int, ...], tuple[int, int]]
) -> None:
    located = []
    for error in exc.errors(include_url=False):
        loc: tuple[str | int, ...] = tuple(error["loc"])
        if error["type"] == "extra_forbidden":
            allowed = _ALLOWED_KEYS["entry" if loc[:1] == ("models",) else ""]
            message = f"unknown key {loc[-1]!r}; allowed keys here: {', '.join(allowed)}"
        else:
            message = _message(loc, error)
        located.append(_format(source, marks, loc, message))
    lines = [text for _, _, text in sorted(located, key=lambda item: item[:2])]
    shown = lines[:_MAX_REPORTED]
    if len(lines) > _MAX_REPORTED:
        shown.append(f"{source}: ... and {len(lines) - _MAX_REPORTED} more problems")
    raise ConfigError("\n".join(shown)) from None
