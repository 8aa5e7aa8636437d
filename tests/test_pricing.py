"""The price table: which entry prices a model, computed costs, overrides, and located errors."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tracewatch.config import PricingSettings, Settings
from tracewatch.errors import ConfigError
from tracewatch.pricing import Price, PriceTable, parse_prices

NAN = math.nan
SHIPPED = Path(__file__).resolve().parents[1] / "tracewatch" / "data" / "prices.yaml"


@pytest.fixture(scope="module")
def shipped() -> PriceTable:
    return PriceTable.load()


@pytest.mark.parametrize(
    ("model", "per_mtok"),
    [
        ("gpt-4o", (2.50, 10.00)),
        ("gpt-4o-2024-08-06", (2.50, 10.00)),
        ("gpt-4o-2024-05-13", (5.00, 15.00)),  # an exact name beats the glob
        ("gpt-4o-mini-2024-07-18", (0.15, 0.60)),  # more specific than gpt-4o*
        ("GPT-4.1-mini", (0.40, 1.60)),  # case does not matter
        ("gpt-4.1-nano-2025-04-14", (0.10, 0.40)),
        ("gpt-4.1", (2.00, 8.00)),
        ("o1", (15.00, 60.00)),
        ("o3-mini", (1.10, 4.40)),
        ("o4-mini-2025-04-16", (1.10, 4.40)),
        ("gpt-4-0125-preview", (10.00, 30.00)),
        ("openai/gpt-4o-mini", (0.15, 0.60)),  # provider prefix
        ("text-embedding-3-small", (0.02, 0.00)),
        ("claude-3-5-sonnet-20241022", (3.00, 15.00)),
        ("anthropic.claude-3-5-haiku-20241022-v1:0", (0.80, 4.00)),  # Bedrock
        ("claude-opus-4-1-20250805", (15.00, 75.00)),
        ("claude-opus-4-5-20251101", (5.00, 25.00)),
        ("claude-sonnet-4-5", (3.00, 15.00)),
        ("gemini-2.5-flash-lite", (0.10, 0.40)),
        ("models/gemini-2.5-pro", (1.25, 10.00)),
        ("mistral-large-latest", (2.00, 6.00)),
        ("meta-llama/Llama-3.3-70B-Instruct-Turbo", (0.88, 0.88)),
    ],
)
def test_shipped_prices(shipped: PriceTable, model: str, per_mtok: tuple[float, float]) -> None:
    price = shipped.price_for(model)
    assert price is not None, model
    assert (price.input_usd_per_mtok, price.output_usd_per_mtok) == pytest.approx(per_mtok)


@pytest.mark.parametrize("model", ["my-finetune", "", None, "gpt", "llama"])
def test_unknown_models_have_no_price(shipped: PriceTable, model: str | None) -> None:
    assert shipped.price_for(model) is None
    assert shipped.cost_of(model, 100, 100) is None


def test_the_shipped_file_says_when_and_that_it_is_a_default() -> None:
    text = SHIPPED.read_text()
    assert "as_of: 20" in text and "DEFAULTS TO OVERRIDE" in text
    assert "TRACEWATCH_PRICING_FILE" in text
    assert len(parse_prices(text, "prices.yaml")) > 40


def table(text: str, override: str | None = None) -> PriceTable:
    extra = parse_prices(textwrap.dedent(override), "override.yaml") if override else []
    return PriceTable(parse_prices(textwrap.dedent(text), "base.yaml"), extra)


def test_most_literal_characters_win_then_exact_names_then_file_order() -> None:
    t = table(
        """
        models:
          - {match: "a*", input: 1, output: 1}
          - {match: "ab*", input: 2, output: 2}
          - {match: "*b*", input: 3, output: 3}
          - {match: "abc", input: 4, output: 4}
          - {match: "abc*", input: 5, output: 5}
          - {match: "x?z", input: 6, output: 6}
          - {match: "x*z", input: 7, output: 7}
        """
    )

    def price(model: str) -> float:
        found = t.price_for(model)
        assert found is not None
        return found.input_usd_per_mtok

    assert price("abd") == 2  # "ab*" has two literals, "a*" and "*b*" one
    assert price("abc") == 4  # exact "abc" beats "abc*" (both three literals)
    assert price("abcd") == 5
    assert price("bb") == 3
    assert price("xyz") == 6  # a tie on literals: the earlier entry


def test_the_override_file_wins_over_every_shipped_entry() -> None:
    t = table(
        """
        models:
          - {match: "gpt-4o-mini*", input: 0.15, output: 0.6}
          - {match: "gpt-4o*", input: 2.5, output: 10}
        """,
        """
        unit: usd_per_token
        models:
          - match: ["gpt-4o*", "house-model"]
            input: 0.000001
            output: 0.000002
        """,
    )
    price = t.price_for("gpt-4o-mini")  # the shipped entry is more specific, but shipped
    assert price == Price(1.0, 2.0, "gpt-4o*", "override.yaml")
    assert t.price_for("house-model") == Price(1.0, 2.0, "house-model", "override.yaml")


def test_a_prefixed_name_tries_its_own_spelling_first() -> None:
    t = table(
        """
        models:
          - {match: "gpt-4o", input: 1, output: 1}
          - {match: "azure/*", input: 9, output: 9}
        """
    )
    assert t.price_for("openai/gpt-4o") == Price(1, 1, "gpt-4o", "base.yaml")
    assert t.price_for("azure/gpt-4o") == Price(9, 9, "azure/*", "base.yaml")


def test_cost_of_one_call(shipped: PriceTable) -> None:
    assert shipped.cost_of("gpt-4o", 1000, 200) == pytest.approx((1000 * 2.5 + 200 * 10) / 1e6)
    # embeddings have input tokens only: exact
    assert shipped.cost_of("text-embedding-3-large", 1_000_000, None) == pytest.approx(0.13)
    # only the output count known: it is a lower bound
    assert shipped.cost_of("gpt-4o", None, 1_000_000) == pytest.approx(10.0)
    assert shipped.cost_of("gpt-4o", NAN, 1_000_000) == pytest.approx(10.0)
    assert shipped.cost_of("gpt-4o", None, None) is None
    assert shipped.cost_of("gpt-4o", NAN, NAN) is None
    assert shipped.cost_of("gpt-4o", 0, 0) == 0.0


def test_fill_costs_completes_only_missing_costs_it_can_price(shipped: PriceTable) -> None:
    models = ["gpt-4o", "gpt-4o", "unknown", "gpt-4o-mini", None, "text-embedding-3-small", "o3"]
    cost = np.array([0.5, NAN, NAN, NAN, NAN, NAN, NAN])
    tokens_in = np.array([1000, 1000, 1000, NAN, 1000, 2_000_000, NAN])
    tokens_out = np.array([100, 100, 100, 1_000_000, 100, NAN, NAN])
    before = (cost.copy(), tokens_in.copy(), tokens_out.copy())
    filled, computed = shipped.fill_costs(models, cost, tokens_in, tokens_out)
    assert computed.tolist() == [False, True, False, True, False, True, False]
    assert filled[0] == 0.5  # provided: kept
    assert filled[1] == pytest.approx((1000 * 2.5 + 100 * 10) / 1e6)
    assert math.isnan(filled[2])  # no price
    assert filled[3] == pytest.approx(0.60)  # output only: input counts as zero
    assert math.isnan(filled[4])  # no model
    assert filled[5] == pytest.approx(0.04)
    assert math.isnan(filled[6])  # no token count at all
    for array, copy in zip((cost, tokens_in, tokens_out), before, strict=True):
        np.testing.assert_array_equal(array, copy)  # inputs untouched
    # the same answers as the scalar call
    for i, model in enumerate(models):
        scalar = shipped.cost_of(model, tokens_in[i], tokens_out[i])
        if computed[i]:
            assert filled[i] == pytest.approx(scalar)


def test_fill_costs_on_empty_and_fully_costed_batches(shipped: PriceTable) -> None:
    empty = np.array([], dtype=np.float64)
    filled, computed = shipped.fill_costs([], empty, empty, empty)
    assert filled.shape == computed.shape == (0,)
    ones = np.ones(3)
    filled, computed = shipped.fill_costs(["gpt-4o"] * 3, ones, ones, ones)
    assert filled.tolist() == [1.0, 1.0, 1.0] and not computed.any()
    with pytest.raises(ValueError, match="one length"):
        shipped.fill_costs(["gpt-4o"], ones, ones, ones)


def test_each_distinct_model_is_resolved_once_and_the_cache_is_bounded() -> None:
    t = PriceTable.load(cache_size=3)
    n = 10_000
    models = ["gpt-4o", "claude-3-5-sonnet-20241022", "unknown-model"] * (n // 3) + ["gpt-4o"]
    nan = np.full(len(models), NAN)
    tokens = np.full(len(models), 100.0)
    _, computed = t.fill_costs(models, nan, tokens, tokens)
    info = t.cache_info()
    assert info.misses == 3 and info.hits == len(models) - 3
    assert int(computed.sum()) == len(models) - n // 3
    for i in range(10):
        t.price_for(f"model-{i}")
    assert t.cache_info().currsize == 3


def test_the_override_file_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text("models:\n  - {match: gpt-4o, input: 100, output: 100}\n")
    monkeypatch.setenv("TRACEWATCH_PRICING_FILE", str(path))
    settings = Settings()
    assert settings.pricing.file == path
    t = PriceTable.from_settings(settings.pricing)
    assert t.price_for("gpt-4o") == Price(100, 100, "gpt-4o", str(path))
    assert t.price_for("gpt-4o-mini") is not None  # shipped entries still there
    monkeypatch.delenv("TRACEWATCH_PRICING_FILE")
    assert PriceTable.from_settings(PricingSettings()).price_for("gpt-4o") == Price(
        2.5, 10.0, "gpt-4o*", "tracewatch/data/prices.yaml"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "models:\n  - match: gpt-4o\n    input: -1\n    output: 2\n",
            "bad.yaml:3:5: models[0].input: -1.0 is not a price; use a number ≥ 0",
        ),
        (
            "models:\n  - match: gpt-4o\n    input: '0.1'\n    output: 2\n",
            "bad.yaml:3:5: models[0].input: expected a number, got '0.1' (string)",
        ),
        (
            "models:\n  - match: gpt-4o\n    input: 1\n    outptu: 2\n",
            "bad.yaml:4:5: models[0].outptu: unknown key 'outptu'; allowed keys here: "
            "match, input, output",
        ),
        (
            "models:\n  - match: gpt-4o\n    input: 1\n",
            "bad.yaml:2:5: models[0].output: required key 'output' is missing",
        ),
        (
            "models:\n  - {match: [], input: 1, output: 1}\n",
            "bad.yaml:2:6: models[0].match: no pattern",
        ),
        (
            "unit: usd_per_kilotoken\nmodels: []\n",
            "bad.yaml:1:1: unit: 'usd_per_kilotoken' is not one of usd_per_million_tokens, "
            "usd_per_token",
        ),
        ("as_of: 2025-01-01\n", "bad.yaml:1:1: models: required key 'models' is missing"),
        ("prices:\n  - x\n", "bad.yaml:1:1: prices: unknown key 'prices'"),
        ("- gpt-4o\n", "bad.yaml:1:1: (top level): expected a mapping with 'models:'"),
        ("models: [\n", "bad.yaml:2:1: YAML syntax error"),
        (
            "models:\n  - {match: a, input: 1, output: 1, input: 2}\n",
            "key 'input' appears twice",
        ),
    ],
)
def test_a_bad_file_names_file_line_and_field(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_prices(text, "bad.yaml")
    assert expected in str(info.value)


def test_an_unreadable_file_says_which_setting_to_check(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TRACEWATCH_PRICING_FILE"):
        PriceTable.load(tmp_path / "missing.yaml")
