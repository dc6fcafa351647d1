"""The non-production rule: one definition, shared by the program's defaults and the policy."""

from __future__ import annotations

import re

import pytest

from domain.stacks import NON_PRODUCTION_STACKS, is_non_production
from tools.offline import ROOT


@pytest.mark.parametrize(
    ("stack", "throwaway"),
    [
        ("dev", True),
        ("dev-alice", True),
        ("e2e-1a2b3c4d", True),
        ("prod", False),
        ("qa", False),
        ("develop", False),
        ("Dev", False),
        ("prod-e2e-copy", False),
    ],
)
def test_dev_and_e2e_stacks_are_non_production(stack: str, throwaway: bool) -> None:
    assert is_non_production(stack) is throwaway


def test_custom_patterns_replace_the_defaults() -> None:
    assert is_non_production("sandbox-1", ["sandbox-*"])
    assert not is_non_production("dev", ["sandbox-*"])


def test_the_ephemeral_test_names_its_stacks_as_non_production() -> None:
    source = (ROOT / "tests/e2e/test_ephemeral_stack.py").read_text()
    (prefix,) = re.findall(r'name = f"([a-z0-9-]+)\{uuid\.uuid4\(\)\.hex\[:8\]\}"', source)
    assert is_non_production(f"{prefix}0123abcd")
    assert f"{prefix}*" in NON_PRODUCTION_STACKS
