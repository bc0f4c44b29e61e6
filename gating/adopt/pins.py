"""Moving model aliases, the provider each belongs to, and the pinned id to use instead (pins.json)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, cast

from gating.diff.semantic import is_pinned

_PROVIDERS = (  # the id's prefix tells the provider
    (re.compile(r"^(gpt-|o\d\b|o\d-|chatgpt-|ft:gpt-)"), "openai"),
    (re.compile(r"^claude-"), "anthropic"),
    (re.compile(r"^gemini-"), "google"),
)


@dataclass(frozen=True)
class Pin:
    """One model id as found, and what to write instead when it is a moving alias."""

    found: str
    provider: str
    pinned: bool
    use: str | None  # the pinned id to use; None when it is pinned already or the alias is not known


@cache
def table() -> dict[str, dict[str, Any]]:
    doc = json.loads(resources.files("gating.adopt").joinpath("pins.json").read_text(encoding="utf-8"))
    return cast(dict[str, dict[str, Any]], doc["aliases"])


def provider_of(model_id: str) -> str | None:
    """openai, anthropic or google from the id's shape; None for an id none of them names."""
    known = table().get(model_id)
    if known:
        return str(known["provider"])
    return next((p for rx, p in _PROVIDERS if rx.search(model_id)), None)


def pin(model_id: str, provider: str | None = None) -> Pin:
    provider = provider or provider_of(model_id) or "openai"
    if is_pinned({"model": model_id}):
        return Pin(model_id, provider, True, None)
    known = table().get(model_id)
    return Pin(model_id, provider, False, str(known["pinned"]) if known else None)
