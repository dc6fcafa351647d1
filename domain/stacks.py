"""Which stacks are throwaway: the one rule the program's defaults and the policy pack share."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

# `dev`, anyone's `dev-<name>`, and the ephemeral test's `e2e-<8 hex>` stacks.
NON_PRODUCTION_STACKS = ("dev", "dev-*", "e2e-*")


def is_non_production(stack: str, patterns: Iterable[str] = NON_PRODUCTION_STACKS) -> bool:
    """True when `stack` matches one of the fnmatch `patterns` (case-sensitive)."""
    return any(fnmatch.fnmatchcase(stack, str(pattern)) for pattern in patterns)
