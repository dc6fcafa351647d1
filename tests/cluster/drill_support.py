"""Support for the cluster drill tests: the CI rule for missing pieces, the run's figures."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
WRITES = 30  # bounded: the drill must stay within a few minutes on 2 shared cores
EXIT_MISSING_PIECE = 2
EXIT_INCOMPLETE = 3  # everything ran, but without the real Tessera


def missing(reason: str) -> None:
    """A piece the drill needs is absent: under CI that fails, elsewhere it skips."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"cluster drill: {reason}", pytrace=False)
    pytest.skip(f"cluster drill: {reason}")


@dataclass(frozen=True)
class DrillRun:
    returncode: int
    figures: dict[str, Any]
    stdout: str
