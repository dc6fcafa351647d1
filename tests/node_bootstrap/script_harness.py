"""Run a machine's start script for real, with its fixed paths moved under a temp dir and the
AWS CLI, docker, curl, psql and mountpoint replaced by recording stubs.

bash, jq, install, chown, sha256sum and friends are the real ones, so the script's own logic
(secret handling, file modes, argument building) is what the tests observe.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    env = {{k: v for k, v in os.environ.items() if k.startswith("PG")}}
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
    "mount": "",
    "mkfs.xfs": "",
    "lsblk": "",
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
        stub = stubs / name
        stub.write_text(_RECORDER.format(python=sys.executable, body=body))
        stub.chmod(0o755)
    (root / "secrets.json").write_text(json.dumps(SECRETS))
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
