"""The drill's configs are the program's, changed only where DIFFERENCES says and why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from node_bootstrap.tessera import validate_tessera_config
from tools.cluster import configs
from tools.cluster.configs import Layout
from tools.cluster.vault import StackSecrets

ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:quorum-ha-drill/x-AbCdEf"
SECRETS = StackSecrets("quorum-ha-drill/tessera", "pub", "tessera_owner", "pw", ARN, ARN, ARN)
LAYOUT = Layout(
    tessera_p2p=(41001, 41002, 41003),
    tessera_q2t=(41101, 41102, 41103),
    tessera_third_party=(41081, 41082, 41083),
    proxy_p2p=42001,
    proxy_third_party=42081,
    proxy_rpc=42000,
    proxy_admin=42900,
    ipc_admin=42901,
    quorum_rpc=(43000, 43001, 43002),
    vault_endpoint="http://127.0.0.1:44000",
    jdbc_hosts="127.0.0.1:45432,127.0.0.1:45433",
    remote_p2p_url="http://127.0.0.1:46001",
    ipc_socket=Path("/tmp/quorum-ha-cluster-test/tm.ipc"),
)


def pairs() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    out = [
        (
            "tessera",
            configs.machine_tessera_config(SECRETS, i),
            configs.local_tessera_config(SECRETS, LAYOUT, i),
        )
        for i in range(configs.TESSERA_COUNT)
    ]
    out.append(
        (
            "standalone-proxy",
            configs.machine_standalone_proxy_config(),
            configs.local_standalone_proxy_config(LAYOUT),
        )
    )
    out.append(
        (
            "ipc-proxy",
            configs.machine_ipc_proxy_config(SECRETS),
            configs.local_ipc_proxy_config(SECRETS, LAYOUT),
        )
    )
    return out


@pytest.mark.parametrize(("file", "machine", "local"), pairs())
def test_local_config_differs_only_where_documented(
    file: str, machine: dict[str, Any], local: dict[str, Any]
) -> None:
    assert configs.differing_paths(machine, local) == configs.documented_paths(file)


@pytest.mark.parametrize("index", range(configs.TESSERA_COUNT))
def test_local_tessera_config_points_at_the_local_pieces(index: int) -> None:
    cfg = configs.local_tessera_config(SECRETS, LAYOUT, index)
    validate_tessera_config(cfg)  # Tessera's own rules, as node_bootstrap mirrors them
    assert cfg["jdbc"]["url"] == (
        "jdbc:postgresql://127.0.0.1:45432,127.0.0.1:45433/tessera"
        "?targetServerType=primary&sslmode=require"
    )
    assert cfg["keys"]["keyVaultConfigs"][0]["properties"]["endpoint"] == LAYOUT.vault_endpoint
    assert cfg["keys"]["keyData"] == [
        {
            "awsSecretsManagerPublicKeyId": "quorum-ha-drill/tesseraPub",
            "awsSecretsManagerPrivateKeyId": "quorum-ha-drill/tesseraKey",
        }
    ]
    binds = {s["app"]: s.get("bindingAddress") for s in cfg["serverConfigs"]}
    assert binds == {
        "P2P": f"http://127.0.0.1:{LAYOUT.tessera_p2p[index]}",
        "Q2T": f"http://127.0.0.1:{LAYOUT.tessera_q2t[index]}",
        "ThirdParty": f"http://127.0.0.1:{LAYOUT.tessera_third_party[index]}",
    }


def test_mirror_switch_only_drops_the_partyinfo_mirror() -> None:
    with_mirror = configs.local_standalone_proxy_config(LAYOUT)
    without = configs.local_standalone_proxy_config(LAYOUT, mirror=False)
    assert configs.differing_paths(with_mirror, without) == {
        f"listeners[p2p].routes[/partyinfo].mirror.{key}"
        for key in ("upstream", "max_in_flight", "timeout")
    }


def test_schema_uri_is_the_boot_scripts_for_the_local_hosts() -> None:
    assert configs.schema_uri(SECRETS, LAYOUT) == (
        "postgresql://127.0.0.1:45432,127.0.0.1:45433/tessera"
        "?target_session_attrs=read-write&sslmode=require"
    )


def test_docs_list_every_difference() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "cluster.md").read_text()
    assert configs.differences_markdown() in doc
