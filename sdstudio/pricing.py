"""Token prices, so every job reports what it cost (and the preview what it will cost).

USD per million input / output tokens, for common Bedrock and OpenAI models as published by the
vendors (override or extend them in ``SDSTUDIO_HOME/prices.yaml``: ``model-id: [input, output]``).
An unknown model costs 0 and the job carries a note saying so, rather than a made-up figure.

Batch prices (a provider's batch API, executors/batch.py): the on-demand price times the provider's
``batch_discount`` (0.5 where the vendor says "half price": OpenAI Batch, Bedrock batch inference), or the
batch prices a prices.yaml entry names after the on-demand ones: ``model-id: [input, output, batch_input,
batch_output]``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import ConfigError

# model id (or a prefix of it) -> (USD per 1M input tokens, USD per 1M output tokens)
BUILTIN_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "anthropic.claude-3-haiku": (0.25, 1.25),
    "anthropic.claude-3-5-haiku": (0.80, 4.00),
    "anthropic.claude-3-5-sonnet": (3.00, 15.00),
    "anthropic.claude-3-7-sonnet": (3.00, 15.00),
    "anthropic.claude-sonnet-4": (3.00, 15.00),
    "meta.llama3-1-8b-instruct": (0.22, 0.22),
    "meta.llama3-1-70b-instruct": (0.72, 0.72),
    "meta.llama3-3-70b-instruct": (0.72, 0.72),
    "mistral.mistral-large": (2.00, 6.00),
    "amazon.nova-micro": (0.035, 0.14),
    "amazon.nova-lite": (0.06, 0.24),
    "amazon.nova-pro": (0.80, 3.20),
    "SmolLM2-135M-Instruct": (0.0, 0.0),  # the embedded model runs on your own CPU
}
_REGION_PREFIXES = ("us.", "eu.", "apac.", "global.")


@dataclass(frozen=True)
class Price:
    input_per_m: float
    output_per_m: float
    known: bool = True
    batch: tuple[float, float] | None = None  # explicit batch prices (prices.yaml); None: a discount applies

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.input_per_m + tokens_out * self.output_per_m) / 1_000_000

    def for_batch(self, discount: float) -> "Price":
        """The price of the same tokens sent through a batch API: the explicit batch prices, else ``discount``
        (the provider's ``batch_discount``) times the on-demand ones."""
        if self.batch is not None:
            return Price(self.batch[0], self.batch[1], self.known)
        return Price(self.input_per_m * discount, self.output_per_m * discount, self.known)


def batch_price(price: Price, provider: object) -> Price:
    """``price`` at ``provider``'s batch rate (its class attribute ``batch_discount``, 1.0 when it names none)."""
    return price.for_batch(float(getattr(provider, "batch_discount", 1.0)))


def load_prices(home: Path | None = None) -> dict[str, tuple[float, ...]]:
    """The built-in prices, overridden by ``home``'s prices.yaml (None: the home in use, as everywhere else, so a
    preview without ``--home`` prices a job as its run does)."""
    from .home import resolve_home

    prices = dict(BUILTIN_PRICES)
    path = resolve_home(home) / "prices.yaml"
    if path.is_file():
        prices.update(_read_prices(path))
    return prices


def _read_prices(path: Path) -> dict[str, tuple[float, ...]]:
    """A user's prices.yaml, checked entry by entry: a mistake is one line naming the model id. Before, a
    quoted "12" was read as the prices 1 and 2, and .inf or a negative price went into every job's cost."""
    from . import safeyaml

    example = "lines like `model-id: [input_usd_per_M, output_usd_per_M]`"
    try:
        data = safeyaml.load(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read it ({' '.join(str(exc).split())[:160]}); expected {example}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected {example}")
    prices = {}
    for key, value in data.items():
        if not (isinstance(value, list) and len(value) in (2, 4) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 for v in value)):
            raise ConfigError(f"{path}: {key}: expected [input_usd_per_M, output_usd_per_M], two numbers of 0 or more "
                              "(or four: then [batch_input_usd_per_M, batch_output_usd_per_M] follow)")
        prices[str(key)] = tuple(float(v) for v in value)
    return prices


def price_for(model: str | None, home: Path | None = None) -> Price:
    """The longest matching prefix wins, ignoring Bedrock's cross-region prefixes (us., eu., ...)."""
    if not model:
        return Price(0.0, 0.0, known=False)
    name = model
    for prefix in _REGION_PREFIXES:
        name = name.removeprefix(prefix)
    prices = load_prices(home)
    matches = [key for key in prices if name.startswith(key) or model.startswith(key)]
    if not matches:
        return Price(0.0, 0.0, known=False)
    values = prices[max(matches, key=len)]
    return Price(values[0], values[1], batch=(values[2], values[3]) if len(values) == 4 else None)
