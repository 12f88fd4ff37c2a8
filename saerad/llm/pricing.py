"""Token prices and dry-run cost estimates.

Prices are list prices in USD per million tokens for the Anthropic API as
published by Anthropic (the same rates apply on Bedrock and Vertex for the
global endpoints). They were checked for the models up to Claude Opus 4.5 /
Haiku 4.5 (late 2025); prices change, and models missing here return None
("unknown") rather than a guess: pass ``price=Price(...)`` to override. Local
endpoints have no per-token price; pass ``price=Price(0, 0)`` to say so.
Message Batches are billed at half price (``BATCH_DISCOUNT``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable

from .types import Prompt


@dataclass(frozen=True)
class Price:
    """USD per million input and output tokens."""

    input_per_mtok: float
    output_per_mtok: float

    def cost(self, input_tokens: int, output_tokens: int, batch: bool = False) -> float:
        """Cost in USD of the given token counts (half price for Message Batches)."""
        usd = (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6
        return usd * (BATCH_DISCOUNT if batch else 1.0)


BATCH_DISCOUNT = 0.5

# The paper (Sept 2024) used Claude 3.5 Sonnet (claude-3-5-sonnet-20240620).
PAPER_MODEL = "claude-3-5-sonnet-20240620"

PRICES: dict[str, Price] = {
    # Claude 3 family (paper era)
    "claude-3-opus-20240229": Price(15.0, 75.0),
    "claude-3-sonnet-20240229": Price(3.0, 15.0),
    "claude-3-haiku-20240307": Price(0.25, 1.25),
    "claude-3-5-sonnet-20240620": Price(3.0, 15.0),
    "claude-3-5-sonnet-20241022": Price(3.0, 15.0),
    "claude-3-5-haiku-20241022": Price(0.80, 4.0),
    "claude-3-7-sonnet-20250219": Price(3.0, 15.0),
    # Claude 4 family
    "claude-sonnet-4-20250514": Price(3.0, 15.0),
    "claude-opus-4-20250514": Price(15.0, 75.0),
    "claude-opus-4-1-20250805": Price(15.0, 75.0),
    "claude-sonnet-4-5-20250929": Price(3.0, 15.0),
    "claude-haiku-4-5-20251001": Price(1.0, 5.0),
    "claude-opus-4-5-20251101": Price(5.0, 25.0),
}

# Undated aliases ("claude-sonnet-4-5") resolve to the dated snapshot above.
_ALIASES = {re.sub(r"-\d{8}$", "", name): name for name in PRICES}
_ALIASES.update({"claude-3-5-sonnet-latest": "claude-3-5-sonnet-20241022",
                 "claude-3-5-haiku-latest": "claude-3-5-haiku-20241022",
                 "claude-3-7-sonnet-latest": "claude-3-7-sonnet-20250219",
                 "claude-3-opus-latest": "claude-3-opus-20240229"})
# Undated aliases of models with several snapshots are ambiguous only in name; prices agree.
_ALIASES["claude-3-5-sonnet"] = "claude-3-5-sonnet-20240620"


def normalize_model_id(model: str) -> str:
    """Map Bedrock / Vertex model ids onto Anthropic API ids.

    ``"us.anthropic.claude-3-5-sonnet-20240620-v1:0"`` and
    ``"claude-3-5-sonnet@20240620"`` both become ``"claude-3-5-sonnet-20240620"``.
    """
    name = model.strip().lower()
    name = re.sub(r"^(?:[a-z]{2,6}\.)?anthropic\.", "", name)  # Bedrock: [region.]anthropic.
    name = re.sub(r"-v\d+(?::\d+)?$", "", name)  # Bedrock: -v1:0
    name = name.replace("@", "-")  # Vertex: claude-3-5-sonnet@20240620
    return name


def price_for(model: str | None) -> Price | None:
    """The list price of ``model``, or None when it is not in the table."""
    if not model:
        return None
    name = normalize_model_id(model)
    name = _ALIASES.get(name, name)
    return PRICES.get(name)


def approx_tokens(text: str) -> int:
    """Approximate token count: ceil(characters / 4).

    The Anthropic tokenizer is not available offline (token counting is an
    API call), so estimates use the usual rule of thumb of about four
    characters of English per token. Radiology text with abbreviations and
    numbers tends to run somewhat above that, so treat estimates as +-25%.
    """
    return math.ceil(len(text) / 4)


def estimate_cost(prompts: Iterable[Prompt], model: str, expected_output_tokens: int | float,
                  price: Price | None = None, batch: bool = False) -> dict:
    """Dry-run cost estimate for sending ``prompts`` to ``model`` (no request is made).

    Parameters
    ----------
    prompts
        The prompts that would be sent (system + user text are counted).
    model
        Model id (Anthropic, Bedrock or Vertex spelling).
    expected_output_tokens
        Expected reply length per prompt, in tokens.
    price
        Override of the price table (e.g. ``Price(0, 0)`` for a local server).
    batch
        Price as Message Batches (half price).

    Returns
    -------
    dict
        ``model, n_prompts, input_tokens, output_tokens, input_usd, output_usd,
        cost_usd, batch, token_count_method``; the USD fields are None with
        ``note`` set when the model has no known price.
    """
    prompts = list(prompts)
    if expected_output_tokens < 0:
        raise ValueError(f"expected_output_tokens: expected >= 0, got {expected_output_tokens}")
    input_tokens = sum(approx_tokens(p.system) + approx_tokens(p.user) for p in prompts)
    output_tokens = int(round(expected_output_tokens * len(prompts)))
    price = price if price is not None else price_for(model)
    row = {
        "model": model, "n_prompts": len(prompts), "input_tokens": input_tokens, "output_tokens": output_tokens,
        "input_usd": None, "output_usd": None, "cost_usd": None, "batch": batch,
        "token_count_method": "approximate: ceil(chars / 4) per system and user text",
        "note": None,
    }
    if price is None:
        row["note"] = f"n/a: no price known for model {model!r}; pass price=Price(input_per_mtok, output_per_mtok)"
        return row
    row["input_usd"] = price.cost(input_tokens, 0, batch=batch)
    row["output_usd"] = price.cost(0, output_tokens, batch=batch)
    row["cost_usd"] = row["input_usd"] + row["output_usd"]
    return row
