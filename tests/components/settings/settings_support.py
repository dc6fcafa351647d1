"""The settings tests' one way in: raw config values -> `parse_settings`."""

from __future__ import annotations

import json
from typing import Any

from components.settings import Settings, parse_settings

GENESIS = json.dumps({"config": {"chainId": 10, "isQuorum": True}})


def settings(stack: str = "dev", region: str | None = "eu-west-1", **values: Any) -> Settings:
    """Settings from config values given as Python (JSON-encoded unless already text)."""
    raw = {"genesis": GENESIS}
    for key, value in values.items():
        raw[key] = value if isinstance(value, str) else json.dumps(value)
    return parse_settings(raw, stack=stack, region=region)
