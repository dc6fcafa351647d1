"""What the drill proves, each with its figure (docs/cluster.md); one drill run per session."""

from __future__ import annotations

import pytest
from drill_support import EXIT_INCOMPLETE, WRITES, DrillRun, missing

from tools.cluster.drill import TESSERA_FIGURES, TESSERA_KEY_ID


def test_vault_holds_the_stacks_secrets_by_the_programs_names(drill_run: DrillRun) -> None:
    names = set(drill_run.figures["secrets_in_vault"])
    assert {f"{TESSERA_KEY_ID}Pub", f"{TESSERA_KEY_ID}Key", f"{TESSERA_KEY_ID}-db"} <= names


def test_schema_sql_of_the_boot_script_applies_from_three_machines_at_once(
    drill_run: DrillRun,
) -> None:
    assert drill_run.figures["schema_applied_by"] == 3


def test_rendered_configs_run_our_proxy_standalone_and_on_the_ipc_socket(
    drill_run: DrillRun,
) -> None:
    assert drill_run.figures["tessera_configs_rendered"] == 3
    assert drill_run.figures["proxies_healthy"] == 2


@pytest.mark.parametrize("client", ["jdbc", "libpq"])
def test_standby_promoted_under_load_loses_no_acknowledged_write(
    drill_run: DrillRun, client: str
) -> None:
    """JDBC (Tessera's driver and URL) and libpq (the boot script's URI) both write through."""
    promotion = drill_run.figures["db_promotion"]
    figures = promotion[client]
    assert figures["writes"] == WRITES
    assert figures["acked"] == WRITES
    assert figures["lost"] == 0
    assert promotion["standby_now_primary"] is True
    if figures["failover_seconds"] is not None:  # null: no write of this client failed
        assert 0 <= figures["failover_seconds"] < 60


def test_json_line_carries_every_figure_the_issue_names(drill_run: DrillRun) -> None:
    assert {"tessera_version", *TESSERA_FIGURES, "wall_seconds"} <= set(drill_run.figures)


def test_real_tessera_serves_the_ha_path(drill_run: DrillRun) -> None:
    """The HA checks need Tessera itself: absent, this fails under CI and skips elsewhere;
    not published where this machine can fetch it, the check is blocked (skipped, saying so)."""
    if drill_run.returncode == EXIT_INCOMPLETE:
        reason = f"real Tessera: {drill_run.figures['tessera_missing']}"
        if drill_run.figures.get("tessera_not_published"):
            pytest.skip(f"cluster drill BLOCKED (issue 10), nothing to install: {reason}")
        missing(reason)
    figures = drill_run.figures
    assert figures["sent"] == figures["read_back"] > 0
    assert figures["lost"] == 0
    assert figures["client_errors_on_tessera_kill"] == 0
    assert figures["recipient_not_found_without_mirror"] is True
    assert figures["recipient_not_found_with_mirror"] is False
