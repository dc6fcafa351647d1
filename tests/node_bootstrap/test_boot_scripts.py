"""start-tessera.sh and start-ipc-proxy.sh (node_bootstrap/scripts.py) run against stubs."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from boot_fixtures import PROXY_IMAGE, SECRETS, Case, arn, make_context
from script_harness import Run, attached_volume, run_script

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


def test_the_db_password_reaches_tessera_in_a_0600_tmpfs_file_never_in_argv_or_env(
    tmp_path: Path,
) -> None:
    run = start_tessera(Case("full", 3, "tessera", 2), tmp_path)
    assert run.returncode == 0, run.stderr
    secrets = run.moved("/run/quorum-ha/secrets")
    # Tessera reads one file: its rendered config with the credentials merged in (by jq).
    merged = secrets / "tessera-config.json"
    assert stat.S_IMODE(merged.stat().st_mode) == 0o600
    assert merged.stat().st_uid == os.getuid()  # the service user (the test's own uid here)
    config = json.loads(merged.read_text())
    assert config["jdbc"]["username"] == DB["username"]
    assert config["jdbc"]["password"] == DB["password"]
    rendered = json.loads(run.moved("/etc/quorum-ha/tessera/tessera-config.json").read_text())
    assert {k: v for k, v in config.items() if k != "jdbc"} == {
        k: v for k, v in rendered.items() if k != "jdbc"
    }
    assert "password" not in rendered["jdbc"]

    (tessera,) = [a for a in run.called("docker") if a[0] == "run"]
    image = "quorumengineering/tessera:aws-24.4"
    options, command = tessera[: tessera.index(image)], tessera[tessera.index(image) + 1 :]
    # The image's own entrypoint (/tessera/bin/tessera) with the merged file, and nothing else:
    # no shell that would put the password on the java command line (ps, /proc/*/cmdline).
    assert "--entrypoint" not in options
    assert command == ["--configfile", str(merged)]
    assert f"{run.moved('/run/quorum-ha')}:{run.moved('/run/quorum-ha')}" in options
    # No process the script started saw the password in its argv or its environment.
    for call in run.calls:
        assert DB["password"] not in json.dumps(call["argv"]), call["cmd"]
        assert DB["password"] not in json.dumps(call["env"]), call["cmd"]
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
    # libpq reads the password from a 0600 password file, not from PGPASSWORD.
    assert "PGPASSWORD" not in psql["env"]
    pgpass = Path(psql["env"]["PGPASSFILE"])
    assert pgpass.read_text() == f"*:*:*:*:{DB['password']}\n"
    assert stat.S_IMODE(pgpass.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("password", "field"),
    [("p:ss\\word", "p\\:ss\\\\word"), ("plain-Pass.1", "plain-Pass.1")],
    ids=["colon-and-backslash", "plain"],
)
def test_the_password_file_escapes_what_libpq_would_split(
    password: str, field: str, tmp_path: Path
) -> None:
    # libpq's password file: "If an entry needs to contain : or \\, escape this character
    # with \\" (PostgreSQL docs, The Password File); otherwise psql would send a wrong one.
    db = json.dumps({"username": DB["username"], "password": password})
    run = run_script(
        make_context(Case("pair", 2, "pair", 0)),
        "start-tessera.sh",
        tmp_path,
        env_overrides={"PG_JDBC_SHA256": JAR_SHA256},
        stub_env={"STUB_DOWNLOAD": JAR},
        secrets={arn("quorum-ha/db"): db},
    )
    assert run.returncode == 0, run.stderr
    secrets = run.moved("/run/quorum-ha/secrets")
    assert (secrets / "pgpass").read_text() == f"*:*:*:*:{field}\n"
    merged = json.loads((secrets / "tessera-config.json").read_text())
    assert merged["jdbc"]["password"] == password


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
    # XFS labels hold 12 characters at most (mkfs.xfs -L); test_real_tools runs the real one.
    assert run.called("mkfs.xfs") == [["-L", "quorum-ha", str(dev / "nvme1n1")]]
    data = run.moved("/var/lib/quorum-ha")
    assert run.called("mount") == [["--fstab", str(tmp_path / "fstab"), str(data)]]
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


@pytest.mark.parametrize(
    "race",
    [
        # systemd mounted it (an fstab entry from an earlier boot) before the script looked.
        {"STUB_FINDMNT_SOURCE": "{device}", "STUB_LSBLK_MOUNTPOINT": "{data}"},
        # ... or between the script's checks and its own mount, which then fails.
        {
            "STUB_FINDMNT_SOURCE": "{device}",
            "STUB_FINDMNT_AFTER_MOUNT": "1",
            "STUB_MOUNT_RC": "32",
        },
    ],
    ids=["before-the-checks", "before-its-mount"],
)
def test_a_volume_systemd_mounted_meanwhile_where_it_belongs_is_success(
    tmp_path: Path, race: dict[str, str]
) -> None:
    # Stubs: mounting a real volume mid-script needs a second actor; test_real_tools does the
    # first case with a real loop device where this machine allows it.
    dev = attached_volume(tmp_path)
    data = str(tmp_path / "data")
    run = run_script(
        make_context(Case("pair", 2, "pair", 0)),
        "mount-data-volume.sh",
        tmp_path,
        env_overrides={"DATA_VOLUME_ID": "", "DATA_DEVICE_NAME": str(dev / "sdf")},
        stub_env={
            "STUB_MOUNTPOINT_RC": "1",
            "STUB_BLKID_TYPE": "xfs",
            "STUB_BLKID_UUID": "5678-ef01",
            **{k: v.format(device=dev / "nvme1n1", data=data) for k, v in race.items()},
        },
    )
    assert run.returncode == 0, run.stderr
    assert run.called("mkfs.xfs") == []


def test_a_volume_mounted_elsewhere_is_still_refused(tmp_path: Path) -> None:
    dev = attached_volume(tmp_path)
    run = run_script(
        make_context(Case("pair", 2, "pair", 0)),
        "mount-data-volume.sh",
        tmp_path,
        env_overrides={"DATA_VOLUME_ID": "", "DATA_DEVICE_NAME": str(dev / "sdf")},
        stub_env={"STUB_MOUNTPOINT_RC": "1", "STUB_LSBLK_MOUNTPOINT": "/mnt/other"},
    )
    assert run.returncode == 1
    assert "already in use" in run.stderr
    assert run.called("mkfs.xfs") == run.called("mount") == []


def test_a_failed_mount_that_left_nothing_mounted_fails(tmp_path: Path) -> None:
    dev = attached_volume(tmp_path)
    run = run_script(
        make_context(Case("pair", 2, "pair", 0)),
        "mount-data-volume.sh",
        tmp_path,
        env_overrides={"DATA_VOLUME_ID": "", "DATA_DEVICE_NAME": str(dev / "sdf")},
        stub_env={
            "STUB_MOUNTPOINT_RC": "1",
            "STUB_BLKID_TYPE": "xfs",
            "STUB_BLKID_UUID": "5678-ef01",
            "STUB_MOUNT_RC": "32",
        },
    )
    assert run.returncode == 1
    assert "could not mount" in run.stderr
