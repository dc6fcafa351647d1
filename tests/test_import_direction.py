"""The import direction of the tree, and every third-party import pinned.

components -> node_bootstrap -> domain; policy and tools -> domain; nothing imports upward.
The domain package and node_bootstrap hold no Pulumi; parsing the config pulls in no cloud
provider SDK.
"""

from __future__ import annotations

import importlib.metadata
import json
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


SKIP = frozenset({".venv", ".git", "build", "node_modules"})
# Run in a fresh interpreter: in a long-lived test worker, after other tests, CPython 3.11's
# ast.parse can fail with "AST constructor recursion depth mismatch" (SystemError).
_COLLECT = """
import ast, json, sys
from pathlib import Path
root, skip = Path(sys.argv[1]), set(sys.argv[2:])
out = {}
for path in sorted(root.rglob("*.py")):
    if skip & set(path.relative_to(root).parts):
        continue
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    out[str(path.relative_to(root))] = sorted(names)
print(json.dumps(out))
"""


@cache
def all_imports() -> dict[str, list[str]]:
    """File (relative) -> every module an absolute import in it names, at any depth."""
    result = subprocess.run(
        [sys.executable, "-c", _COLLECT, str(ROOT), *SKIP],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(result.stdout))


def _imports_in(package: str) -> dict[str, list[str]]:
    return {f: names for f, names in all_imports().items() if f.startswith(package + "/")}


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_no_package_imports_one_above_it(package: str) -> None:
    wrong = {
        f"{path}: {name}"
        for path, names in _imports_in(package).items()
        for name in names
        if name.split(".")[0] in OURS and name.split(".")[0] not in MAY_IMPORT[package]
    }
    assert not wrong, f"{package} may import only {sorted(MAY_IMPORT[package])}"


@pytest.mark.parametrize("package", NO_PULUMI)
def test_the_domain_and_the_boot_hold_no_pulumi(package: str) -> None:
    wrong = {
        f"{path}: {name}"
        for path, names in _imports_in(package).items()
        for name in names
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
    # Test helpers import each other by name (pytest puts their folder on the path).
    local = {Path(f).stem for f in all_imports()}
    found: dict[str, set[str]] = {}
    for path, names in all_imports().items():
        for name in names:
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top in OURS or top in local or top[0] == "_":
                continue
            found.setdefault(top, set()).add(path)
    return found


def test_every_third_party_import_is_pinned() -> None:
    distributions = importlib.metadata.packages_distributions()
    unpinned = {
        f"{top} ({', '.join(distributions.get(top, ['no installed distribution']))}): "
        f"{sorted(files)[0]}"
        for top, files in _third_party_imports().items()
        if not {_normalized(d) for d in distributions.get(top, [])} & pinned()
    }
    assert not unpinned, "pin these in requirements.txt or requirements-dev.txt"
