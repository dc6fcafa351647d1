"""Run a machine's start script for real, with its fixed paths moved under a temp dir and the
AWS CLI, docker, curl, psql and the block-device tools replaced by recording stubs.

bash, jq, install, chown, sha256sum and friends are the real ones, so the script's own logic
(secret handling, file modes, argument building) is what the tests observe. A test can keep the
real program for any stubbed name (``real=``) where it can run here (psql, mkfs.xfs, mount...).
Every stub records its argv and its whole environment, so a test can prove a secret is in none.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from boot_fixtures import SECRETS, require_tool

from node_bootstrap import NodeBootContext
from node_bootstrap.user_data import machine_files

MOVED = {
    "/etc/fstab": "fstab",
    "/opt/quorum-ha/bin": "bin",
    "/etc/quorum-ha": "etc",
    "/run/quorum-ha": "run",
    "/var/lib/quorum-ha": "data",
}

_RECORDER = """\
#!{python}
import json, os, sys
name = os.path.basename(sys.argv[0])
with open(os.environ["STUB_LOG"], "a") as log:
    env = dict(os.environ)
    log.write(json.dumps({{"cmd": name, "argv": sys.argv[1:], "env": env}}) + "\\n")
{body}
"""

_STUB_BODIES = {
    "aws": """\
secrets = json.load(open(os.environ["STUB_SECRETS"]))
if sys.argv[1:3] == ["secretsmanager", "get-secret-value"]:
    print(secrets[sys.argv[sys.argv.index("--secret-id") + 1]])
""",
    "docker": "",
    "mountpoint": 'sys.exit(int(os.environ.get("STUB_MOUNTPOINT_RC", "0")))',
    "psql": "",
    # A state machine for the reboot race: mount can fail (STUB_MOUNT_RC) as if systemd had
    # mounted the volume first; findmnt then reports it (STUB_FINDMNT_SOURCE), at once or only
    # after that mount attempt (STUB_FINDMNT_AFTER_MOUNT).
    "mount": """\
open(os.environ["STUB_LOG"] + ".mounted", "w").close()
sys.exit(int(os.environ.get("STUB_MOUNT_RC", "0")))
""",
    "findmnt": """\
source = os.environ.get("STUB_FINDMNT_SOURCE", "")
if os.environ.get("STUB_FINDMNT_AFTER_MOUNT") and not os.path.exists(
    os.environ["STUB_LOG"] + ".mounted"
):
    source = ""
if not source:
    sys.exit(1)  # findmnt's "nothing found"
print(source)
""",
    "mkfs.xfs": "",
    "lsblk": 'print(os.environ.get("STUB_LSBLK_MOUNTPOINT", ""))',
    "blkid": """\
field = sys.argv[sys.argv.index("-s") + 1]
value = os.environ.get("STUB_BLKID_" + field, "")
if not value:
    sys.exit(2)  # blkid's "nothing found"
print(value)
""",
    "curl": """\
if "-o" in sys.argv and sys.argv[sys.argv.index("-o") + 1] != "/dev/null":
    with open(sys.argv[sys.argv.index("-o") + 1], "wb") as f:
        f.write(os.environ["STUB_DOWNLOAD"].encode())
else:
    sys.stdout.write(os.environ.get("STUB_HTTP_CODE", "200"))
""",
}


@dataclass
class Run:
    root: Path
    returncode: int
    stderr: str
    calls: list[dict[str, Any]]

    def moved(self, path: str) -> Path:
        return Path(_move(path, self.root))

    def called(self, cmd: str) -> list[list[str]]:
        return [c["argv"] for c in self.calls if c["cmd"] == cmd]


def _move(text: str, root: Path) -> str:
    for old, new in MOVED.items():
        text = text.replace(old, f"{root}/{new}")
    return text


def run_script(
    ctx: NodeBootContext,
    script: str,
    root: Path,
    *,
    env_overrides: dict[str, str] | None = None,
    stub_env: dict[str, str] | None = None,
    real: tuple[str, ...] = (),
    secrets: dict[str, str] | None = None,
) -> Run:
    """Write the machine's files under root, then run bin/<script> with the stubs on PATH."""
    require_tool("jq")  # the scripts parse secrets with the real jq (apt-packages.txt)
    for path, (mode, text) in machine_files(ctx).items():
        if not path.startswith(tuple(MOVED)):
            continue
        target = Path(_move(path, root))
        target.parent.mkdir(parents=True, exist_ok=True)
        moved = _move(text, root)
        if path.endswith("boot.env"):
            # Let install -o/-g work without root: the service user is whoever runs the test.
            overrides = {
                "SERVICE_UID": str(os.getuid()),
                "SERVICE_GID": str(os.getgid()),
                **(env_overrides or {}),
            }
            lines = [line for line in moved.splitlines() if line.split("=", 1)[0] not in overrides]
            moved = "\n".join([*lines, *(f'{k}="{v}"' for k, v in overrides.items())]) + "\n"
        target.write_text(moved)
        target.chmod(int(mode, 8))
    stubs = root / "stubs"
    stubs.mkdir(exist_ok=True)
    for name, body in _STUB_BODIES.items():
        if name in real:
            continue
        stub = stubs / name
        stub.write_text(_RECORDER.format(python=sys.executable, body=body))
        stub.chmod(0o755)
    (root / "secrets.json").write_text(json.dumps(SECRETS | (secrets or {})))
    (root / "run").mkdir(exist_ok=True)
    (root / "fstab").touch()
    log = root / "calls.jsonl"
    log.write_text("")
    env = {
        "PATH": f"{stubs}:{os.environ['PATH']}",
        "STUB_LOG": str(log),
        "STUB_SECRETS": str(root / "secrets.json"),
        "HOME": str(root),
        **(stub_env or {}),
    }
    proc = subprocess.run(
        ["bash", str(root / "bin" / script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    return Run(root=root, returncode=proc.returncode, stderr=proc.stderr, calls=calls)


def flags(argv: list[str]) -> dict[str, str | bool]:
    """--name value / --name pairs of a geth command line."""
    out: dict[str, str | bool] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--"):
            if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                out[arg] = argv[i + 1]
                i += 2
                continue
            out[arg] = True
        i += 1
    return out


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
