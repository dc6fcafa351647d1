"""The import direction of the tree, and every third-party import pinned.

components -> node_bootstrap -> domain; policy and tools -> domain; nothing imports upward.
The domain package and node_bootstrap hold no Pulumi; parsing the config pulls in no cloud
provider SDK.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Which of our packages each package may import (itself included).
MAY_IMPORT: dict[str, frozenset[str]] = {
    "domain": frozenset({"domain"}),
    "node_bootstrap": frozenset({"domain", "node_bootstrap"}),
    "components": frozenset({"domain", "node_bootstrap", "components"}),
    "policy": frozenset({"domain", "policy"}),
    # Tools render what machines get (node_bootstrap) and judge plans (policy); they run the
    # program whole (tools/offline.py: runpy of __main__.py), never import its components.
    "tools": frozenset({"domain", "node_bootstrap", "policy", "tools"}),
}
OURS = frozenset({*MAY_IMPORT, "tests", "bench", "quorum_proxy"})
NO_PULUMI = ("domain", "node_bootstrap")
PROVIDER_SDKS = ("pulumi_aws", "pulumi_docker_build", "pulumi_random")


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imports_of(path: Path) -> set[str]:
    """Every module an absolute import in the file names, at any depth (functions too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_no_package_imports_one_above_it(package: str) -> None:
    wrong = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in _modules(package)
        for name in imports_of(path)
        if name.split(".")[0] in OURS and name.split(".")[0] not in MAY_IMPORT[package]
    }
    assert not wrong, f"{package} may import only {sorted(MAY_IMPORT[package])}"


@pytest.mark.parametrize("package", NO_PULUMI)
def test_the_domain_and_the_boot_hold_no_pulumi(package: str) -> None:
    wrong = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in _modules(package)
        for name in imports_of(path)
        if name.split(".")[0].startswith("pulumi")
    }
    assert not wrong


def test_parsing_the_config_loads_no_cloud_provider_sdk() -> None:
    # A fresh interpreter: what importing the settings really loads, transitively.
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, components.settings; print(' '.join(sorted(sys.modules)))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "components.settings" in loaded
    assert not [m for m in loaded if m.split(".")[0] in PROVIDER_SDKS]


# ------------------------------------------------------------------ every import pinned

_REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==\S+")


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@cache
def pinned() -> frozenset[str]:
    """Distributions pinned with == in the requirement files (`./dev` installs them all)."""
    names = set()
    for path in (ROOT / "requirements.txt", ROOT / "requirements-dev.txt"):
        names |= _pins(path)
    return frozenset(names | _pins(ROOT / "proxy_image" / "requirements.txt"))


def _pins(path: Path) -> set[str]:
    found = set()
    for line in path.read_text().splitlines():
        match = _REQUIREMENT.match(line.split("#", 1)[0].strip())
        if match:
            found.add(_normalized(match.group(1)))
    return found


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level module -> the files importing it, for every import outside the stdlib."""
    found: dict[str, set[str]] = {}
    skip = {".venv", ".git", "build", "node_modules"}
    for path in ROOT.rglob("*.py"):
        if skip & set(path.relative_to(ROOT).parts):
            continue
        for name in imports_of(path):
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top in OURS or top.startswith("_"):
                continue
            found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    # Test helpers import each other by name (pytest puts their folder on the path).
    local = {p.stem for p in ROOT.rglob("*.py") if not skip & set(p.relative_to(ROOT).parts)}
    return {top: files for top, files in found.items() if top not in local}


def test_every_third_party_import_is_pinned() -> None:
    distributions = importlib.metadata.packages_distributions()
    unpinned = {
        f"{top} ({', '.join(distributions.get(top, ['no installed distribution']))}): "
        f"{sorted(files)[0]}"
        for top, files in _third_party_imports().items()
        if not {_normalized(d) for d in distributions.get(top, [])} & pinned()
    }
    assert not unpinned, "pin these in requirements.txt or requirements-dev.txt"
