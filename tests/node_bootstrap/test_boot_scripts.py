"""start-tessera.sh and start-ipc-proxy.sh (node_bootstrap/scripts.py) run against stubs."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from boot_fixtures import PROXY_IMAGE, SECRETS, Case, arn, make_context
from script_harness import Run, run_script

JAR = "PK fixture stand-in for postgresql.jar"
JAR_SHA256 = hashlib.sha256(JAR.encode()).hexdigest()
DB = json.loads(SECRETS[arn("quorum-ha/db")])


def start_tessera(case: Case, root: Path, sha256: str = JAR_SHA256) -> Run:
    return run_script(
        make_context(case),
        "start-tessera.sh",
        root,
        env_overrides={"PG_JDBC_SHA256": sha256},
        stub_env={"STUB_DOWNLOAD": JAR},
    )


def test_tessera_gets_db_credentials_as_overrides_read_inside_the_container(
    tmp_path: Path,
) -> None:
    run = start_tessera(Case("full", 3, "tessera", 2), tmp_path)
    assert run.returncode == 0, run.stderr
    secrets = run.moved("/run/quorum-ha/secrets")
    assert (secrets / "jdbc-username").read_text() == DB["username"]
    assert (secrets / "jdbc-password").read_text() == DB["password"]
    for name in ("jdbc-username", "jdbc-password"):
        assert stat.S_IMODE((secrets / name).stat().st_mode) == 0o600

    (tessera,) = [a for a in run.called("docker") if a[0] == "run"]
    image = "quorumengineering/tessera:aws-24.4"
    options, command = tessera[: tessera.index(image)], tessera[tessera.index(image) + 1 :]
    assert options[options.index("--entrypoint") + 1] == "/bin/sh"
    assert command[0] == "-c"
    assert "--configfile" in command[1]
    assert '-o "jdbc.password=$(cat ' in command[1]
    # The password never appears on the docker command line (nor in docker inspect).
    assert DB["password"] not in json.dumps(run.called("docker"))
    jar_mount = f"{run.moved('/var/lib/quorum-ha')}/tessera/lib/postgresql-42.7.7.jar"
    assert f"{jar_mount}:/tessera/lib/postgresql-42.7.7.jar:ro" in options
    assert Path(jar_mount).read_text() == JAR


def test_schema_is_applied_before_tessera_starts(tmp_path: Path) -> None:
    run = start_tessera(Case("pair", 2, "pair", 0), tmp_path)
    assert run.returncode == 0, run.stderr
    order = [c["cmd"] for c in run.calls if c["cmd"] in ("psql", "docker")]
    assert order.index("psql") < order.index("docker")
    (psql,) = [c for c in run.calls if c["cmd"] == "psql"]
    assert psql["argv"][0].startswith("postgresql://tessera-db.abc")
    assert "target_session_attrs=read-write" in psql["argv"][0]
    assert psql["argv"][psql["argv"].index("-f") + 1].endswith("/sql/tessera-schema.sql")
    assert psql["env"]["PGUSER"] == DB["username"]
    assert psql["env"]["PGPASSWORD"] == DB["password"]


def test_a_jdbc_jar_with_the_wrong_checksum_is_never_used(tmp_path: Path) -> None:
    run = start_tessera(Case("full", 2, "tessera", 0), tmp_path, sha256="0" * 64)
    assert run.returncode != 0
    assert "does not match its pinned SHA-256" in run.stderr
    assert [a for a in run.called("docker") if a[0] == "run"] == []
    assert not list(run.moved("/var/lib/quorum-ha").glob("tessera/lib/*"))


def test_ipc_proxy_logs_in_to_ecr_and_runs_the_proxy_on_tm_ipc(tmp_path: Path) -> None:
    run = run_script(make_context(Case("full", 2, "quorum", 1)), "start-ipc-proxy.sh", tmp_path)
    assert run.returncode == 0, run.stderr
    assert ["ecr", "get-login-password", "--region", "eu-west-1"] in run.called("aws")
    docker = run.called("docker")
    assert ["login", "--username", "AWS", "--password-stdin", PROXY_IMAGE.split("/")[0]] in docker
    (proxy,) = [a for a in docker if a[0] == "run"]
    command = proxy[proxy.index(PROXY_IMAGE) + 1 :]
    assert command == ["-m", "quorum_proxy", "--config", "/etc/quorum-proxy/config.yaml"]
    assert f"{run.moved('/etc/quorum-ha/proxy')}:/etc/quorum-proxy:ro" in proxy
    assert f"{run.moved('/run/quorum-ha')}:{run.moved('/run/quorum-ha')}" in proxy


def attached_volume(root: Path) -> Path:
    """A block device node at root/dev/nvme1n1 with the /dev/sdf-style link to it."""
    if os.geteuid() != 0:
        reason = "creating a block device node needs root (CI runs as root)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason + "; CI is not set, so skipping locally")
    dev = root / "dev"
    dev.mkdir()
    os.mknod(dev / "nvme1n1", 0o600 | stat.S_IFBLK, os.makedev(259, 99))
    (dev / "sdf").symlink_to(dev / "nvme1n1")
    return dev


def test_a_blank_data_volume_gets_a_filesystem_and_an_fstab_entry(tmp_path: Path) -> None:
    dev = attached_volume(tmp_path)
    run = run_script(
        make_context(Case("full", 2, "quorum", 0)),
        "mount-data-volume.sh",
        tmp_path,
        env_overrides={"DATA_VOLUME_ID": "", "DATA_DEVICE_NAME": str(dev / "sdf")},
        stub_env={"STUB_MOUNTPOINT_RC": "1", "STUB_BLKID_UUID": "1234-abcd"},
    )
    assert run.returncode == 0, run.stderr
    assert run.called("mkfs.xfs") == [["-L", "quorum-ha-data", str(dev / "nvme1n1")]]
    data = run.moved("/var/lib/quorum-ha")
    assert run.called("mount") == [[str(data)]]
    assert (tmp_path / "fstab").read_text() == (
        f"UUID=1234-abcd {data} xfs defaults,nofail,noatime 0 2\n"
    )


def test_a_data_volume_with_a_filesystem_is_never_reformatted(tmp_path: Path) -> None:
    dev = attached_volume(tmp_path)
    run = run_script(
        make_context(Case("pair", 2, "pair", 1)),
        "mount-data-volume.sh",
        tmp_path,
        env_overrides={"DATA_VOLUME_ID": "", "DATA_DEVICE_NAME": str(dev / "sdf")},
        stub_env={
            "STUB_MOUNTPOINT_RC": "1",
            "STUB_BLKID_TYPE": "xfs",
            "STUB_BLKID_UUID": "5678-ef01",
        },
    )
    assert run.returncode == 0, run.stderr
    assert run.called("mkfs.xfs") == []
    assert "UUID=5678-ef01 " in (tmp_path / "fstab").read_text()


def test_a_mounted_data_volume_is_left_alone(tmp_path: Path) -> None:
    run = run_script(make_context(Case("full", 2, "tessera", 1)), "mount-data-volume.sh", tmp_path)
    assert run.returncode == 0, run.stderr
    assert [c["cmd"] for c in run.calls] == ["mountpoint"]
