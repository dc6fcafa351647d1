"""Which role runs what, in each setup: the one rule the components and the boot share."""

from __future__ import annotations

import pytest

from domain.setups import (
    ROLES_BY_SETUP,
    SETUPS,
    SMALLEST_HA,
    runs_ipc_proxy,
    runs_quorum,
    runs_tessera,
)
from tests.node_bootstrap.boot_fixtures import CASES, make_context


@pytest.mark.parametrize("setup", SETUPS)
def test_each_setup_has_one_group_of_quorum_machines_and_tessera_somewhere(setup: str) -> None:
    roles = ROLES_BY_SETUP[setup]
    # components/setups.py names the Quorum (and the Tessera) machines by this.
    assert len([r for r in roles if runs_quorum(r)]) == 1
    assert len([r for r in roles if runs_tessera(r)]) == 1
    assert set(SMALLEST_HA) == set(SETUPS)


@pytest.mark.parametrize("role", sorted({r for roles in ROLES_BY_SETUP.values() for r in roles}))
def test_the_ipc_proxy_runs_where_quorum_has_no_local_tessera(role: str) -> None:
    assert runs_ipc_proxy(role) == (runs_quorum(role) and not runs_tessera(role))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_the_boot_context_says_what_the_domain_says(case: object) -> None:
    ctx = make_context(case)  # type: ignore[arg-type]
    assert (ctx.runs_quorum, ctx.runs_tessera, ctx.runs_ipc_proxy) == (
        runs_quorum(ctx.role),
        runs_tessera(ctx.role),
        runs_ipc_proxy(ctx.role),
    )
