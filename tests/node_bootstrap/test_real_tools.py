"""Every boot artifact checked by the real program that will read it, where Debian ships one
(apt-packages.txt): mkfs.xfs, mount and findmnt on a loop device, systemd-analyze verify,
logrotate, psql, and the CloudWatch agent's own JSON schema (vendored, see vendor/README.md).
cloud-init schema and shellcheck run in test_user_data.py and test_shell_and_secrets.py; jq
runs for real inside every script the harness executes.

Stubs remain only where the real thing cannot run here: the AWS CLI and docker (no AWS account,
no Docker engine on a test machine), and the CloudWatch agent itself (not in Debian; its schema
is what its fetch-config checks first, translator/cmdutil/translatorutil.go).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from boot_fixtures import CASES, Case, make_context, require_tool
from script_harness import attached_volume, run_script

from domain.paths import LOG_DIR
from node_bootstrap.user_data import cloudwatch_agent_config, machine_files

UNITS = "/etc/systemd/system/"
SCHEMA = Path(__file__).parent / "vendor" / "cloudwatch-agent-schema.json"
# XFS needs 300 MiB at least (xfsprogs 5.19+); a sparse file costs nothing.
IMAGE_SIZE = 320 * 1024 * 1024


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, **kwargs)


def blank_image(path: Path) -> Path:
    with path.open("wb") as f:
        f.truncate(IMAGE_SIZE)
    return path


# --- mkfs.xfs -------------------------------------------------------------------------------


def test_the_real_mkfs_xfs_accepts_the_exact_arguments_of_the_mount_script(
    tmp_path: Path,
) -> None:
    mkfs = require_tool("mkfs.xfs")
    blkid = require_tool("blkid")
    dev = attached_volume(tmp_path)
    script = run_script(
        make_context(Case("full", 2, "tessera", 0)),
        "mount-data-volume.sh",
        tmp_path,
        env_overrides={"DATA_VOLUME_ID": "", "DATA_DEVICE_NAME": str(dev / "sdf")},
        stub_env={"STUB_MOUNTPOINT_RC": "1", "STUB_BLKID_UUID": "1234-abcd"},
    )
    assert script.returncode == 0, script.stderr
    (argv,) = script.called("mkfs.xfs")
    device = str(dev / "nvme1n1")
    assert argv[-1] == device
    image = blank_image(tmp_path / "volume.img")
    proc = run([mkfs, *argv[:-1], str(image)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    label = argv[argv.index("-L") + 1]
    assert run([blkid, "-o", "value", "-s", "LABEL", str(image)]).stdout.strip() == label


def test_the_real_mkfs_xfs_refuses_a_label_over_12_characters(tmp_path: Path) -> None:
    # Guard: the check above would see the defect this project shipped.
    mkfs = require_tool("mkfs.xfs")
    proc = run([mkfs, "-L", "quorum-ha-data", str(blank_image(tmp_path / "v.img"))])
    assert proc.returncode != 0
    assert "Invalid value quorum-ha-data for -L option" in proc.stderr


class LoopDevice:
    """A loop device over a sparse image, detached (and unmounted) on exit."""

    def __init__(self, tmp_path: Path) -> None:
        losetup = require_tool("losetup")
        if os.geteuid() != 0:
            reason = "loop devices need root (CI runs as root)"
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(reason)
            pytest.skip(reason + "; CI is not set, so skipping locally")
        image = blank_image(tmp_path / "loop.img")
        proc = run([losetup, "--find", "--show", str(image)])
        if proc.returncode != 0:
            # A container without /dev/loop* (no privilege to create them): the stub state
            # machine in test_boot_scripts.py covers the same logic there.
            pytest.skip(f"this machine gives no loop device: {proc.stderr.strip()}")
        self.losetup = losetup
        self.path = proc.stdout.strip()
        self.mounted: list[Path] = []

    def mount(self, target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        proc = run([require_tool("mount"), self.path, str(target)])
        assert proc.returncode == 0, proc.stderr
        self.mounted.append(target)

    def close(self) -> None:
        for target in self.mounted:
            run(["umount", str(target)])
        run([self.losetup, "--detach", self.path])


REAL_BLOCK_TOOLS = ("mkfs.xfs", "blkid", "lsblk", "findmnt", "mount")


def test_a_blank_volume_is_formatted_and_mounted_by_the_real_tools(tmp_path: Path) -> None:
    loop = LoopDevice(tmp_path)
    data = tmp_path / "data"
    try:
        script = run_script(
            make_context(Case("pair", 2, "pair", 1)),
            "mount-data-volume.sh",
            tmp_path,
            env_overrides={"DATA_VOLUME_ID": "", "DATA_DEVICE_NAME": loop.path},
            stub_env={"STUB_MOUNTPOINT_RC": "1"},  # mountpoint(1) would see tmp_path's fs
            real=REAL_BLOCK_TOOLS,
        )
        if run(["findmnt", "-n", str(data)]).returncode == 0:
            loop.mounted.append(data)
        assert script.returncode == 0, script.stderr
        found = run(["findmnt", "-n", "-o", "SOURCE,FSTYPE,LABEL", "--mountpoint", str(data)])
        assert found.stdout.split() == [loop.path, "xfs", "quorum-ha"]
        fstab = (tmp_path / "fstab").read_text()
        assert fstab.startswith("UUID=") and f" {data} xfs defaults,nofail,noatime 0 2" in fstab
    finally:
        loop.close()


def test_a_volume_systemd_already_mounted_in_place_is_success_with_the_real_tools(
    tmp_path: Path,
) -> None:
    # The reboot race: the fstab entry of an earlier boot lets systemd mount the volume after
    # the script's first check (here: a stub mountpoint that still says "not mounted").
    loop = LoopDevice(tmp_path)
    data = tmp_path / "data"
    try:
        proc = run([require_tool("mkfs.xfs"), "-q", "-L", "quorum-ha", loop.path])
        assert proc.returncode == 0, proc.stderr
        loop.mount(data)
        script = run_script(
            make_context(Case("pair", 2, "pair", 1)),
            "mount-data-volume.sh",
            tmp_path,
            env_overrides={"DATA_VOLUME_ID": "", "DATA_DEVICE_NAME": loop.path},
            stub_env={"STUB_MOUNTPOINT_RC": "1"},
            real=REAL_BLOCK_TOOLS,
        )
        assert script.returncode == 0, script.stderr
        assert (tmp_path / "fstab").read_text() == ""
    finally:
        loop.close()


# --- systemd-analyze verify -----------------------------------------------------------------


def unit_sets() -> dict[str, dict[str, tuple[str, str]]]:
    """One machine per distinct set of unit texts: case id -> its machine files."""
    seen: dict[tuple[str, ...], str] = {}
    out: dict[str, dict[str, tuple[str, str]]] = {}
    for case in CASES:
        files = machine_files(make_context(case))
        key = tuple(sorted(t for p, (_, t) in files.items() if p.startswith(UNITS)))
        if key not in seen:
            seen[key] = case.id
            out[case.id] = files
    return out


UNIT_SETS = unit_sets()


def system_root(tmp_path: Path, files: dict[str, tuple[str, str]]) -> Path:
    """A --root for systemd-analyze: the host's own system units (sysinit.target & co, which
    verify loads), this machine's files with their modes, and every other program a unit
    runs."""
    root = tmp_path / "root"
    host_units = next(
        p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()
    )
    shutil.copytree(
        host_units, root / "usr/lib/systemd/system", symlinks=False, ignore_dangling_symlinks=True
    )
    for path, (mode, text) in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(int(mode, 8))
    logrotate = require_tool("logrotate")
    (root / "usr/sbin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(logrotate, root / "usr/sbin/logrotate")
    # docker is not a Debian package and no Docker engine runs here: verify only needs an
    # executable at the path ExecStop names.
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    docker = root / "usr/bin/docker"
    docker.write_text("#!/bin/sh\nexit 0\n")
    docker.chmod(0o755)
    return root


def verify(root: Path, units: list[str]) -> subprocess.CompletedProcess[str]:
    systemd_analyze = require_tool("systemd-analyze")
    paths = [str(root / UNITS.lstrip("/") / unit) for unit in units]
    return run([systemd_analyze, "verify", f"--root={root}", *paths])


@pytest.mark.parametrize("machine", list(UNIT_SETS))
def test_systemd_analyze_verify_accepts_every_unit(machine: str, tmp_path: Path) -> None:
    files = UNIT_SETS[machine]
    units = sorted(p.removeprefix(UNITS) for p in files if p.startswith(UNITS))
    assert "quorum-ha-data.service" in units
    proc = verify(system_root(tmp_path, files), units)
    # verify only warns (exit 0) on unknown keys and bad values: any message is a failure.
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("Restart=always", "Restart=sometimes"), "Failed to parse service restart specifier"),
        (("Restart=always", "Restrat=always"), "Unknown key"),
        (("ExecStart=/opt/quorum-ha/bin/", "ExecStart=/opt/quorum-ha/nobin/"), "not executable"),
    ],
    ids=["bad-value", "unknown-key", "missing-program"],
)
def test_systemd_analyze_verify_sees_a_broken_unit(
    edit: tuple[str, str], message: str, tmp_path: Path
) -> None:
    files = dict(machine_files(make_context(Case("pair", 2, "pair", 0))))
    path = UNITS + "quorum-ha-quorum.service"
    mode, text = files[path]
    assert edit[0] in text
    files[path] = (mode, text.replace(edit[0], edit[1]))
    proc = verify(system_root(tmp_path, files), ["quorum-ha-quorum.service"])
    assert message in proc.stdout + proc.stderr


# --- logrotate --------------------------------------------------------------------------------


def test_logrotate_caps_the_service_logs_with_the_units_own_command(tmp_path: Path) -> None:
    logrotate = require_tool("logrotate")
    files = machine_files(make_context(Case("pair", 2, "pair", 0)))
    service = files[UNITS + "quorum-ha-logrotate.service"][1]
    (command,) = [
        ln.removeprefix("ExecStart=") for ln in service.splitlines() if "ExecStart=" in ln
    ]
    log_dir = tmp_path / "log"
    log_dir.mkdir(mode=0o750)
    etc = tmp_path / "etc"
    etc.mkdir()
    config = files["/etc/quorum-ha/logrotate.conf"][1]
    (etc / "logrotate.conf").write_text(config.replace(LOG_DIR, str(log_dir)))
    argv = command.replace(LOG_DIR, str(log_dir)).replace("/etc/quorum-ha", str(etc)).split()
    assert argv[0] == "/usr/sbin/logrotate"
    big, small = log_dir / "start-quorum.log", log_dir / "start-tessera.log"
    with big.open("wb") as f:
        f.write(b"geth crash loop\n")
        f.truncate(200 * 1024 * 1024)
    small.write_text("tessera started\n")

    proc = run([logrotate, *argv[1:]])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # copytruncate: the file systemd appends to stays the same inode, now empty.
    assert big.stat().st_size == 0
    assert (log_dir / "start-quorum.log.1.gz").exists()
    assert small.read_text() == "tessera started\n"
    assert not (log_dir / "start-tessera.log.1.gz").exists()


# --- psql -------------------------------------------------------------------------------------


def test_the_real_psql_takes_the_schema_scripts_arguments_and_password_file(
    tmp_path: Path,
) -> None:
    require_tool("psql")
    jar = "PK fixture stand-in for postgresql.jar"
    script = run_script(
        make_context(Case("full", 2, "tessera", 0)),
        "start-tessera.sh",
        tmp_path,
        # Port 9 (discard) on loopback: nothing listens, so psql gets as far as connecting.
        env_overrides={
            "PG_JDBC_SHA256": hashlib.sha256(jar.encode()).hexdigest(),
            "TESSERA_DB_URI": "postgresql://127.0.0.1:9/tessera?sslmode=disable",
        },
        stub_env={"STUB_DOWNLOAD": jar},
        real=("psql",),
    )
    # psql exits 1 on a bad option or unreadable file, 2 when the connection fails.
    assert script.returncode == 2, script.stderr
    assert 'connection to server at "127.0.0.1", port 9 failed' in script.stderr
    assert "password file" not in script.stderr  # libpq would warn on a loose 0600
    assert [c for c in script.called("docker") if c[0] == "run"] == []


# --- the CloudWatch agent's schema -----------------------------------------------------------


def agent_schema_errors(config: dict[str, Any]) -> list[str]:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft4Validator(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(config)]


def test_the_cloudwatch_agent_config_passes_the_agents_own_schema(case: Case) -> None:
    assert agent_schema_errors(cloudwatch_agent_config(make_context(case))) == []


def test_the_agents_schema_would_see_a_bad_key() -> None:
    config = cloudwatch_agent_config(make_context(Case("pair", 2, "pair", 0)))
    config["logs"]["logs_collected"]["files"]["collect_list"][0]["from_start"] = True
    assert any("from_start" in error for error in agent_schema_errors(config))
