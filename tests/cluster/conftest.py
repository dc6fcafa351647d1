"""The cluster drill, run once per session as `./dev cluster` runs it (python -m tools.cluster)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from drill_support import EXIT_INCOMPLETE, EXIT_MISSING_PIECE, REPO, WRITES, DrillRun, missing


@pytest.fixture(scope="session")
def drill_run() -> DrillRun:
    done = subprocess.run(
        [sys.executable, "-m", "tools.cluster", str(WRITES)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode == EXIT_MISSING_PIECE:
        missing(done.stderr.strip())
    assert done.returncode in (0, EXIT_INCOMPLETE), (
        f"drill exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    last = done.stdout.strip().splitlines()[-1]
    return DrillRun(done.returncode, json.loads(last), done.stdout)
