"""The non-production rule: one definition, shared by the program's defaults and the policy."""

from __future__ import annotations

import pytest
import yaml

from domain.stacks import is_non_production
from tools.e2e_checks import E2E_STACK_ENV, ephemeral_stack_name
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
    # Both ways the e2e test gets its stack name: the workflow's per-run name, and its own.
    workflow = yaml.safe_load((ROOT / ".github/workflows/e2e.yml").read_text())
    template = workflow["env"][E2E_STACK_ENV]
    from_workflow = template.replace("${{ github.run_id }}", "12345678901")
    for environ in ({}, {E2E_STACK_ENV: from_workflow}):
        name = ephemeral_stack_name(environ)
        assert is_non_production(name), name
