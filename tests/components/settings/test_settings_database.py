"""The database section (components/settings/database.py)."""

from __future__ import annotations

import json

import pytest
from settings_support import settings

from components.settings import ConfigError, parse_settings


@pytest.mark.parametrize(
    ("stack", "value", "multi_az"),
    [
        ("dev", None, False),
        ("e2e-1a2b3c4d", None, False),
        ("prod", None, True),
        ("dev", True, True),
        ("prod", False, False),
    ],
)
def test_replica_multi_az_defaults_on_for_production(
    stack: str, value: bool | None, multi_az: bool
) -> None:
    values = {} if value is None else {"replicaMultiAz": value}
    assert settings(stack=stack, **values).database.replica_multi_az is multi_az


def test_replica_multi_az_must_be_a_boolean() -> None:
    expected = r"^quorum-ha:replicaMultiAz: 'yes' is not valid; allowed: true or false$"
    with pytest.raises(ConfigError, match=expected):
        settings(replicaMultiAz="yes")


def test_the_prod_example_runs_a_multi_az_replica() -> None:
    from tools.offline import load_stack_config

    config = load_stack_config("prod")
    values = {
        k.split(":", 1)[1]: v if isinstance(v, str) else json.dumps(v)
        for k, v in config.items()
        if k.startswith("quorum-ha:")
    }
    prod = parse_settings(values, stack="prod", region=config["aws:region"])
    assert prod.database.replica_multi_az is True
    assert config["quorum-ha:replicaMultiAz"] is True  # said in the example, not left implied


@pytest.mark.parametrize("version", ["14", "14.1", "14.10", "15", "15.8", "16", "16.4", "17"])
def test_engine_versions_with_replica_backups_are_accepted(version: str) -> None:
    assert settings(dbEngineVersion=version).database.engine_version == version


@pytest.mark.parametrize(
    "version", ["13", "13.16", "14.0", "12", "12.20", "11", "16.x", "v16", "14."]
)
def test_engine_versions_without_replica_backups_are_refused(version: str) -> None:
    # The replica keeps backups so a promoted one has them: PostgreSQL 14.1+ only.
    with pytest.raises(ConfigError) as refused:
        settings(dbEngineVersion=version)
    message = str(refused.value)
    assert message.startswith(f"quorum-ha:dbEngineVersion: {version!r} is not valid; allowed: ")
    assert "14.1" in message and "\n" not in message


def test_same_replica_region_means_a_same_region_replica() -> None:
    assert settings(replicaRegion="eu-west-1").database.replica_region is None
    assert settings(replicaRegion="eu-central-1").database.replica_region == "eu-central-1"


def test_replica_region_needs_a_network_this_program_builds() -> None:
    with pytest.raises(ConfigError, match=r"quorum-ha:replicaRegion.*network.mode is new"):
        settings(
            replicaRegion="eu-central-1",
            network={"mode": "stackReference", "stack": "acme/net/prod"},
        )
