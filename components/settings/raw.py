"""The stack's raw config strings, with typed getters that raise `ConfigError`."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from domain.errors import ConfigError
from domain.naming import PROJECT as NAMESPACE

T = TypeVar("T")


class Raw:
    """The raw config strings (keys without the namespace), read by each section's parser."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = values

    def key(self, name: str) -> str:
        return f"{NAMESPACE}:{name}"

    def str_(self, name: str, default: str | None = None) -> str | None:
        value = self.values.get(name)
        return default if value is None else value

    def parsed(self, name: str) -> Any:
        """Structured values arrive as JSON text; plain strings stay strings."""
        value = self.values.get(name)
        if value is None:
            return None
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value

    def int_(self, name: str, default: int) -> int:
        value = self.parsed(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self.key(name), self.values[name], "an integer")
        return value

    def bool_(self, name: str, default: bool) -> bool:
        value = self.parsed(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(self.key(name), self.values[name], "true or false")
        return value

    def list_(self, name: str, item: Callable[[str, str], T]) -> tuple[T, ...]:
        value = self.parsed(name)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(self.key(name), value, "a list of strings")
        return tuple(item(f"{self.key(name)}[{i}]", v) for i, v in enumerate(value))


def cidr_block(key: str, value: str) -> str:
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError:
        raise ConfigError(
            key, value, "a CIDR block with no host bits set, e.g. 10.0.0.0/16"
        ) from None
    return str(network)
