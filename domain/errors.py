"""The one error for a bad value: its message names the key, the value and what is allowed.

Config (`components/settings`), a machine's boot context and the Tessera config guard
(`node_bootstrap`) raise it or a subclass that says where the key lives. The proxy image keeps
its own `quorum_proxy.config.ConfigError`: that package ships alone in its container.
"""

from __future__ import annotations

import json
from typing import Any

REDACTED = "[secret]"
MAX_SHOWN = 120


def show(value: Any, *, as_json: bool = True) -> str:
    """A value as the message quotes it, cut at 120: strings in repr, the rest as JSON (what
    the operator wrote in the stack config) or, for values built in Python, in repr."""
    if isinstance(value, str) or not as_json:
        shown = repr(value)
    else:
        shown = json.dumps(value, default=repr)
    return shown if len(shown) <= MAX_SHOWN else shown[: MAX_SHOWN - 3] + "..."


class ConfigError(ValueError):
    """One invalid value: the message names the key, the value and what is allowed."""

    # Values read from config are shown as JSON; subclasses checking Python values use repr.
    json_values = True

    def __init__(self, key: str, value: Any, allowed: str, *, secret: bool = False) -> None:
        shown = REDACTED if secret else show(value, as_json=self.json_values)
        super().__init__(f"{key}: {shown} is not valid; allowed: {allowed}")
        self.key = key
