"""NodeBootContext checks (node_bootstrap/context.py): one clear error per unusable field."""

from __future__ import annotations

import dataclasses

import pytest
from boot_fixtures import Case, make_context, replace

from node_bootstrap import BootContextError, NodeBootContext, render_user_data, validate_context
from node_bootstrap.context import jdbc_to_libpq_uri

FULL_QUORUM = Case("full", 2, "quorum", 1)


def test_every_fixture_context_is_valid(ctx: NodeBootContext) -> None:
    validate_context(ctx)


def test_fields_added_by_node_bootstrap_have_defaults() -> None:
    # The infrastructure may construct the context with the original fields only.
    added = {"permissioned", "data_device_name", "data_volume_id"} | {
        f.name for f in dataclasses.fields(NodeBootContext) if f.name.startswith("postgres_")
    }
    ctx = make_context(FULL_QUORUM)
    original = {
        f.name: getattr(ctx, f.name)
        for f in dataclasses.fields(NodeBootContext)
        if f.name not in added
    }
    minimal = NodeBootContext(**original)
    assert minimal.permissioned is True
    assert minimal.data_device_name == "/dev/sdf"
    assert render_user_data(minimal).startswith("#cloud-config\n")


@pytest.mark.parametrize(
    ("case", "changes", "fragment"),
    [
        (FULL_QUORUM, {"setup": "single"}, "setup: 'single'"),
        (FULL_QUORUM, {"role": "pair"}, "role: 'pair'"),
        (Case("pair", 2, "pair", 0), {"role": "tessera"}, "in setup 'pair'"),
        (FULL_QUORUM, {"index": 2}, "index: 2"),
        (Case("tessera", 2, "quorum", 0), {"index": 1}, "index: 1"),
        (FULL_QUORUM, {"region": "Ireland"}, "region: 'Ireland'"),
        (FULL_QUORUM, {"node_dns_name": "quorum 1"}, "node_dns_name"),
        (FULL_QUORUM, {"tessera_dns_names": ()}, "tessera_dns_names"),
        (FULL_QUORUM, {"p2p_url": "http://0.0.0.0:9001"}, "p2p_url"),
        (FULL_QUORUM, {"third_party_url": "http://nlb.example"}, "third_party_url"),
        (FULL_QUORUM, {"db_secret_arn": "quorum-ha/db"}, "db_secret_arn"),
        (FULL_QUORUM, {"jdbc_url": "jdbc:mysql://db:3306/t"}, "jdbc_url"),
        (FULL_QUORUM, {"quorum_version": "latest"}, "quorum_version: 'latest'"),
        (FULL_QUORUM, {"proxy_image_uri": None}, "proxy_image_uri: None"),
        (FULL_QUORUM, {"proxy_image_uri": "quorum-proxy"}, "proxy_image_uri"),
        (FULL_QUORUM, {"tessera_peer_urls": ("tessera.partner:9001",)}, "tessera_peer_urls"),
        (FULL_QUORUM, {"network_id": -1}, "network_id: -1"),
        (FULL_QUORUM, {"log_group_name": "bad group"}, "log_group_name"),
        (FULL_QUORUM, {"data_device_name": "/dev/nvme1n1"}, "data_device_name"),
        (FULL_QUORUM, {"data_volume_id": "volume-1"}, "data_volume_id"),
        # A value that could break out of boot.env's quoting never gets that far.
        (FULL_QUORUM, {"jdbc_url": 'jdbc:postgresql://db:5432/t?x="$(reboot)"'}, "jdbc_url"),
        (FULL_QUORUM, {"jdbc_url": 'jdbc:postgresql://db"$(reboot)":5432/t'}, "jdbc_url"),
        (FULL_QUORUM, {"tessera_key_id": "quorum ha"}, "tessera_key_id"),
    ],
)
def test_unusable_field_is_refused_by_name(
    case: Case, changes: dict[str, object], fragment: str
) -> None:
    ctx = replace(make_context(case), **changes)
    with pytest.raises(BootContextError) as err:
        render_user_data(ctx)
    assert str(err.value).startswith("NodeBootContext.")
    assert fragment in str(err.value)


def test_jdbc_url_becomes_a_libpq_uri_for_the_same_hosts() -> None:
    uri = jdbc_to_libpq_uri(
        "jdbc:postgresql://p.rds:5432,r.rds:5432/tessera?targetServerType=primary"
    )
    assert uri == (
        "postgresql://p.rds:5432,r.rds:5432/tessera?target_session_attrs=read-write&sslmode=require"
    )


# One rule with the stack config (domain/validation.py). The boot context used to accept the
# ISO partitions' regions, whose endpoints are not amazonaws.com: the machines' Tessera would
# have been sent to secretsmanager.<region>.amazonaws.com.
@pytest.mark.parametrize("region", ["us-iso-east-1", "us-isob-east-1", "cn-north-1"])
def test_regions_outside_the_amazonaws_com_partitions_are_refused(region: str) -> None:
    with pytest.raises(BootContextError, match=rf"^NodeBootContext.region: '{region}'"):
        validate_context(replace(make_context(FULL_QUORUM), region=region))


# GoQuorum refuses these (ConsenSys/quorum p2p/enode/urlv4.go: ParseUint(..., 10, 16)); the
# boot context used to accept any 5 digits and any query.
@pytest.mark.parametrize("suffix", [":65536", ":30303?discport=x", ":21000?raftport=70000"])
def test_peer_enodes_goquorum_would_refuse_are_refused(suffix: str) -> None:
    enode = "enode://" + "ab" * 64 + "@10.0.0.9" + suffix
    with pytest.raises(BootContextError, match=r"^NodeBootContext.peer_enodes: "):
        validate_context(replace(make_context(FULL_QUORUM), peer_enodes=(enode,)))
