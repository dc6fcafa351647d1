"""`./dev`: what each command sets up. `plan` and `up` run neither the proxy nor setup_debian
(which installs gcc from apt-packages.txt): their setup must not need a C compiler; `test`
builds the relay's compiled scans after installing it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_setup_that_plan_and_up_run_does_not_need_a_c_compiler(tmp_path: Path) -> None:
    dev = (ROOT / "dev").read_text()
    setup_python = re.search(r"^setup_python\(\) \{\n.*?^\}\n", dev, re.S | re.M)
    assert setup_python is not None
    plan = re.search(r"^  plan\)\n(.*?);;", dev, re.S | re.M)
    up = re.search(r"^  up\)\n(.*?);;", dev, re.S | re.M)
    assert plan is not None and up is not None
    # what `plan` and `up` run before their command: setup_python only, not setup_debian
    for branch in (plan.group(1), up.group(1)):
        assert "setup_python" in branch and "setup_debian" not in branch
    # a tree with the scan's sources and an installed venv (the stamp newer than requirements)
    for name in ("requirements.txt", "requirements-dev.txt", "proxy_image/requirements.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    for name in ("proxy_image/build_relay_scan.py", "proxy_image/quorum_proxy/_relay_scan.c"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / ".venv/bin").mkdir(parents=True)
    (tmp_path / ".venv/bin/python").symlink_to(sys.executable)
    stamp = tmp_path / ".venv/.installed"
    stamp.touch()
    os.utime(stamp, (2**31, 2**31))
    script = f"set -euo pipefail\nvenv=.venv\n{setup_python.group(0)}setup_python\necho ready\n"
    env = {**os.environ, "CC": str(tmp_path / "no-such-cc")}  # a machine without gcc
    done = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ready")


def test_the_tests_build_the_relay_scans_after_installing_the_compiler() -> None:
    dev = (ROOT / "dev").read_text()
    test = re.search(r"^  test\)\n(.*?);;", dev, re.S | re.M)
    assert test is not None
    steps = test.group(1)
    assert steps.index("setup_debian") < steps.index("build_relay_scan") < steps.index("pytest")
    assert "gcc" in (ROOT / "apt-packages.txt").read_text().split()
