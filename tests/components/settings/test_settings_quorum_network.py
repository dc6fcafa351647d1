"""The Quorum network section (components/settings/quorum_network.py)."""

from __future__ import annotations

from typing import Any

import pytest
from settings_support import settings

from components.settings import ConfigError


@pytest.mark.parametrize("is_quorum", [None, False, "true"])
def test_a_genesis_without_is_quorum_is_refused_before_any_resource(is_quorum: Any) -> None:
    config: dict[str, Any] = {"chainId": 10}
    if is_quorum is not None:
        config["isQuorum"] = is_quorum
    with pytest.raises(ConfigError) as error:
        settings(genesis={"config": config})
    assert str(error.value).startswith("quorum-ha:genesis.config.isQuorum: ")
    assert "true" in str(error.value).split("allowed:")[1]


@pytest.mark.parametrize("peer", ["http://t2:9001/$x", "http://t2:9001/a'b", "http://t2:9001/a b"])
def test_a_tessera_peer_the_machines_would_refuse_is_refused_as_config(peer: str) -> None:
    with pytest.raises(ConfigError) as error:
        settings(tesseraPeers=[peer])
    assert str(error.value).startswith("quorum-ha:tesseraPeers[0]: ")


NODE_ID = "ab" * 64


# GoQuorum parses these (ConsenSys/quorum p2p/enode/urlv4.go: hex.DecodeString takes either
# case; URLv4 writes raftport for raft networks); the settings used to refuse them.
@pytest.mark.parametrize(
    "enode",
    [
        f"enode://{NODE_ID.upper()}@10.0.0.9:30303",
        f"enode://{NODE_ID}@10.0.0.9:21000?discport=0&raftport=50400",
        f"enode://{NODE_ID}@[fd00::9]:30303",
    ],
)
def test_quorum_peers_goquorum_parses_are_accepted(enode: str) -> None:
    assert settings(quorumPeers=[enode]).quorum_network.quorum_peers == (enode,)


@pytest.mark.parametrize(
    "enode", [f"enode://{NODE_ID}@10.0.0.9:65536", f"enode://{NODE_ID}@10.0.0.9:1?discport=x"]
)
def test_quorum_peers_goquorum_refuses_are_refused(enode: str) -> None:
    with pytest.raises(ConfigError, match=r"^quorum-ha:quorumPeers\[0\]: .*allowed: an enode URL"):
        settings(quorumPeers=[enode])
