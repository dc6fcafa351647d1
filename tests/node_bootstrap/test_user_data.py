"""render_user_data (node_bootstrap/user_data.py): content, limits and cloud-init's own schema."""

from __future__ import annotations

import base64
import configparser
import gzip
import hashlib
import json
import subprocess
from pathlib import Path

import pglast
import pglast.stream
import pytest
from boot_fixtures import (
    CASES,
    PROXY_IMAGE,
    Case,
    cloud_config_doc,
    make_context,
    parse_env,
    replace,
    require_tool,
    written_files,
)
from pglast import ast
from pglast.enums import TransactionStmtKind

from domain.user_data import EC2_USER_DATA_LIMIT, UserDataTooLargeError, pack_user_data
from node_bootstrap import (
    NodeBootContext,
    render_ipc_proxy_config,
    render_quorum_files,
    render_tessera_config,
    render_user_data,
)
from node_bootstrap.user_data import machine_files, render_packed_user_data

UNITS = "/etc/systemd/system/"


def files_of(ctx: NodeBootContext) -> dict[str, str]:
    return written_files(cloud_config_doc(render_user_data(ctx)))


def unit(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def test_cloud_init_accepts_every_user_data(case: Case, tmp_path: Path) -> None:
    cloud_init = require_tool("cloud-init")
    path = tmp_path / "user-data"
    path.write_text(render_user_data(make_context(case)))
    proc = subprocess.run(
        [cloud_init, "schema", "--config-file", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Valid cloud-config" in proc.stdout


def test_packed_user_data_fits_ec2s_16_kib(ctx: NodeBootContext) -> None:
    packed = base64.b64decode(render_packed_user_data(ctx))
    assert len(packed) <= EC2_USER_DATA_LIMIT
    assert gzip.decompress(packed).decode() == render_user_data(ctx)


def test_files_are_plain_text_with_their_modes() -> None:
    ctx = make_context(Case("pair", 3, "pair", 2))
    doc = cloud_config_doc(render_user_data(ctx))
    assert all("encoding" not in entry for entry in doc["write_files"])
    modes = {e["path"]: (e["permissions"], e["owner"]) for e in doc["write_files"]}
    assert modes["/opt/quorum-ha/bin/start-quorum.sh"] == ("0755", "root:root")
    assert modes["/etc/quorum-ha/boot.env"] == ("0644", "root:root")
    assert written_files(doc) == {p: text for p, (_, text) in machine_files(ctx).items()}


def test_packing_is_one_deterministic_gzip_that_cloud_init_unpacks() -> None:
    text = render_user_data(make_context(Case("full", 3, "quorum", 1)))
    packed = pack_user_data(text, machine="quorum-0.example")
    assert packed == pack_user_data(text, machine="quorum-0.example")  # no mtime inside
    raw = base64.b64decode(packed, validate=True)
    assert raw[:2] == b"\x1f\x8b"  # the magic cloud-init looks for
    assert gzip.decompress(raw).decode() == text


def test_packed_user_data_over_the_limit_names_the_machine_and_what_to_shrink() -> None:
    # Hash output does not compress: the gzip stays over 16 KiB.
    noise = b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(EC2_USER_DATA_LIMIT // 32))
    noise_text = base64.b64encode(noise).decode()
    with pytest.raises(UserDataTooLargeError) as caught:
        pack_user_data("#cloud-config\n# " + noise_text + "\n", machine="pair-0.example")
    message = str(caught.value)
    assert "pair-0.example" in message
    assert f"{caught.value.size} bytes gzipped" in message
    assert caught.value.size > EC2_USER_DATA_LIMIT
    assert f"limit of {EC2_USER_DATA_LIMIT} bytes" in message
    assert "genesis" in message and "quorumPeers" in message
    assert "\n" not in message


def test_the_rendered_configs_are_the_files_written(ctx: NodeBootContext) -> None:
    files = files_of(ctx)
    if ctx.runs_tessera:
        assert files["/etc/quorum-ha/tessera/tessera-config.json"] == render_tessera_config(ctx)
    if ctx.runs_ipc_proxy:
        assert files["/etc/quorum-ha/proxy/config.yaml"] == render_ipc_proxy_config(ctx)
    if ctx.runs_quorum:
        quorum = render_quorum_files(ctx)
        assert files["/etc/quorum-ha/quorum/genesis.json"] == quorum["genesis.json"]
        assert files["/opt/quorum-ha/bin/start-quorum.sh"] == quorum["start-quorum.sh"]


def test_each_role_gets_its_services(ctx: NodeBootContext) -> None:
    units = {p.removeprefix(UNITS) for p in files_of(ctx) if p.startswith(UNITS)}
    expected = {"quorum-ha-data.service", "quorum-ha-logrotate.timer"}
    if ctx.role == "pair":
        expected |= {"quorum-ha-tessera.service", "quorum-ha-quorum.service"}
    elif ctx.role == "quorum":
        expected |= {"quorum-ha-proxy.service", "quorum-ha-quorum.service"}
    else:
        expected |= {"quorum-ha-tessera.service"}
    # The timer starts the rotation service; the service itself is not enabled.
    assert units == expected | {"quorum-ha-logrotate.service"}
    enable = cloud_config_doc(render_user_data(ctx))["runcmd"][-1]
    assert enable[:4] == ["systemctl", "enable", "--now", "--no-block"]
    assert set(enable[4:]) == expected


def test_services_restart_on_every_exit_including_quorums_112(ctx: NodeBootContext) -> None:
    for path, text in files_of(ctx).items():
        if not path.startswith(UNITS) or "-data." in path or "-logrotate." in path:
            continue
        service = unit(text)["Service"]
        assert service["Restart"] == "always", path
        assert "SuccessExitStatus" not in service, path
        assert service["RestartForceExitStatus"] == "112", path
        assert unit(text)["Unit"]["StartLimitIntervalSec"] == "0", path


@pytest.mark.parametrize("case", [c for c in CASES if c.role != "tessera"], ids=lambda c: c.id)
def test_quorum_starts_after_its_private_transaction_manager(case: Case) -> None:
    ctx = make_context(case)
    quorum = unit(files_of(ctx)[UNITS + "quorum-ha-quorum.service"])["Unit"]
    ptm = "quorum-ha-tessera.service" if ctx.role == "pair" else "quorum-ha-proxy.service"
    assert ptm in quorum["After"].split()
    assert ptm in quorum["Wants"].split()


def test_boot_env_pins_the_images_and_names_the_secrets_by_arn(ctx: NodeBootContext) -> None:
    env = parse_env(files_of(ctx)["/etc/quorum-ha/boot.env"])
    assert env["TM_IPC_PATH"] == "/run/quorum-ha/tm.ipc"
    assert env["AWS_REGION"] == "eu-west-1"
    if ctx.runs_quorum:
        assert env["QUORUM_IMAGE"] == "quorumengineering/quorum:24.4.1"
        assert env["QUORUM_NODE_KEY_SECRET_ARN"] == ctx.quorum_node_key_secret_arn
        assert env["QUORUM_RPC_PORT"] == "22000"
    if ctx.runs_tessera:
        assert env["TESSERA_IMAGE"] == "quorumengineering/tessera:aws-24.4"
        assert env["DB_SECRET_ARN"] == ctx.db_secret_arn
        assert env["TESSERA_DB_URI"] == (
            "postgresql://tessera-db.abc.eu-west-1.rds.amazonaws.com:5432,"
            "tessera-db-replica.abc.eu-west-1.rds.amazonaws.com:5432/tessera"
            "?target_session_attrs=read-write&sslmode=require"
        )
        assert len(env["PG_JDBC_SHA256"]) == 64
    assert ("PROXY_IMAGE" in env) == ctx.runs_ipc_proxy
    if ctx.runs_ipc_proxy:
        assert env["PROXY_IMAGE"] == PROXY_IMAGE


# Names in Amazon Linux 2023's package lists: github.com/amazonlinux/amazon-linux-2023 at
# 2128881983d5 (2025-02-18), al2023-support-statements/support_info.xml (<package name=...>)
# and Release-Notes-Amazon-Linux-2023.1.20230719.md (x86_64 rows: docker 20.10.25, jq 1.6,
# amazon-cloudwatch-agent 1.247358.0, postgresql15 15.0, logrotate 3.20.1). One unknown name
# makes cloud-init's whole package install fail: no docker, no node.
AL2023_PACKAGES = {"docker", "jq", "amazon-cloudwatch-agent", "postgresql15", "logrotate"}


def test_packages_are_for_amazon_linux_2023(ctx: NodeBootContext) -> None:
    packages = cloud_config_doc(render_user_data(ctx))["packages"]
    assert set(packages) <= AL2023_PACKAGES
    assert {"docker", "jq", "amazon-cloudwatch-agent", "logrotate"} <= set(packages)
    assert ("postgresql15" in packages) == ctx.runs_tessera


def test_cloudwatch_agent_ships_logs_to_the_stacks_group(ctx: NodeBootContext) -> None:
    files = files_of(ctx)
    agent = json.loads(files["/etc/quorum-ha/cloudwatch-agent.json"])
    collected = agent["logs"]["logs_collected"]["files"]["collect_list"]
    assert {c["log_group_name"] for c in collected} == {ctx.log_group_name}
    # A glob without publish_multi_logs tails only the newest match (the agent's
    # plugins/inputs/logfile/logfile.go): every file a unit writes is named, each to its own
    # stream, read from its start (the agent's default from_beginning=true, ruleFromBeginning.go).
    logs = {
        line.split(":", 1)[1]
        for path, text in files.items()
        if path.startswith(UNITS)
        for line in text.splitlines()
        if line.startswith("StandardOutput=append:")
    }
    assert "/var/log/quorum-ha/mount-data-volume.log" in logs
    by_path = {c["file_path"]: c for c in collected}
    assert len(by_path) == len(collected)
    assert set(by_path) == logs | {"/var/log/cloud-init-output.log"}
    assert not any(c.get("publish_multi_logs") for c in collected)
    assert all("*" not in c["file_path"] for c in collected)
    streams = [c["log_stream_name"] for c in collected]
    assert len(set(streams)) == len(streams)
    assert by_path["/var/log/quorum-ha/mount-data-volume.log"]["log_stream_name"] == (
        f"{ctx.node_dns_name}/mount-data-volume"
    )
    assert "disk" in agent["metrics"]["metrics_collected"]
    assert ("metrics_collected" in agent["logs"]) == ctx.runs_quorum


def test_tessera_schema_is_idempotent_and_serialised() -> None:
    sql = files_of(make_context(Case("full", 2, "tessera", 1)))[
        "/etc/quorum-ha/sql/tessera-schema.sql"
    ]
    # PostgreSQL's own parser (libpg_query): the file is valid SQL, statement by statement.
    stmts = [raw.stmt for raw in pglast.parse_sql(sql)]
    begin, lock, *ddl, commit = stmts
    assert (
        isinstance(begin, ast.TransactionStmt)
        and begin.kind == TransactionStmtKind.TRANS_STMT_BEGIN
    )
    assert isinstance(commit, ast.TransactionStmt)
    assert commit.kind == TransactionStmtKind.TRANS_STMT_COMMIT
    assert isinstance(lock, ast.SelectStmt)
    assert "pg_advisory_xact_lock" in pglast.stream.RawStream()(lock)
    creates = [s for s in ddl if isinstance(s, ast.CreateStmt)]
    indexes = [s for s in ddl if isinstance(s, ast.IndexStmt)]
    assert len(creates) + len(indexes) == len(ddl)
    assert {s.relation.relname for s in creates if s.relation is not None} == {
        "encrypted_transaction",
        "encrypted_raw_transaction",
        "privacy_group",
        "st_transaction",
        "st_affected_transaction",
    }
    assert all(s.if_not_exists for s in creates)
    assert indexes and all(s.if_not_exists for s in indexes)


def test_data_volume_is_found_by_volume_id_first() -> None:
    ctx = make_context(Case("full", 2, "quorum", 1))
    env = parse_env(files_of(ctx)["/etc/quorum-ha/boot.env"])
    assert env["DATA_VOLUME_ID"] == ctx.data_volume_id
    assert env["DATA_DEVICE_NAME"] == "/dev/sdf"
    assert (
        parse_env(files_of(replace(ctx, data_volume_id=None))["/etc/quorum-ha/boot.env"])[
            "DATA_VOLUME_ID"
        ]
        == ""
    )
