"""Fixtures for the node bootstrap tests (shared data lives in boot_fixtures.py)."""

from __future__ import annotations

import pytest
from boot_fixtures import CASES, Case, make_context

from node_bootstrap import NodeBootContext


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    case: Case = request.param
    return case


@pytest.fixture
def ctx(case: Case) -> NodeBootContext:
    return make_context(case)
