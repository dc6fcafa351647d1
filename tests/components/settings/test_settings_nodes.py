"""The nodes section (components/settings/nodes.py)."""

from __future__ import annotations

import pytest
from settings_support import settings

from components.settings import ConfigError


@pytest.mark.parametrize(
    ("setup", "quorum", "tessera"), [("full", 2, 2), ("full", 5, 3), ("tessera", 1, 4)]
)
def test_node_counts_per_setup(setup: str, quorum: int, tessera: int) -> None:
    s = settings(setup=setup, quorumNodes=quorum, tesseraNodes=tessera)
    assert (s.nodes.quorum_count, s.nodes.tessera_count) == (quorum, tessera)


def test_tessera_setup_defaults_to_one_quorum_and_two_tessera() -> None:
    s = settings(setup="tessera")
    assert (s.nodes.quorum_count, s.nodes.tessera_count) == (1, 2)


@pytest.mark.parametrize(
    "instance_type",
    ["m6i.large", "c5.xlarge", "t3.medium", "r7i.2xlarge", "m5zn.large", "g5.xlarge"],
)
def test_x86_instance_types_are_accepted(instance_type: str) -> None:
    assert settings(tesseraInstanceType=instance_type).nodes.tessera_instance_type == instance_type


@pytest.mark.parametrize(
    "instance_type",
    [
        "m7g.large",
        "t4g.small",
        "c7g.xlarge",
        "c6gn.large",
        "r8g.large",
        "x2gd.large",
        "a1.large",
        "im4gn.large",
    ],
)
def test_graviton_types_are_refused_with_the_tessera_reason(instance_type: str) -> None:
    with pytest.raises(ConfigError) as refused:
        settings(quorumInstanceType=instance_type)
    message = str(refused.value)
    assert message.startswith(f"quorum-ha:quorumInstanceType: '{instance_type}' is not valid")
    assert "arm64" in message and "x86_64" in message
