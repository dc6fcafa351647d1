"""Every document the repo points to exists: relative markdown links (anchors included) and
every `*.md` path named in code."""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

from tools.offline import ROOT

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
# A path-like token ending in .md, with an optional #anchor.
MD_NAME = re.compile(r"[\w./-]*\w\.md(?:#[\w-]+)?\b")
CODE_SUFFIXES = {".py", ".sh", ".yaml", ".yml", ".toml", ".txt", ".cfg", ".ini", ".json"}
CODE_NAMES = {"dev", "Dockerfile", ".dockerignore", "run"}
# Names in test data that stand for files of a fixture, not documents of this repo.
NOT_REFERENCES = {
    # docker build contexts the .dockerignore tests build in tmp_path
    ("tests/components/test_infra_proxy_service.py", "docs/README.md"),
    ("tests/components/test_infra_proxy_service.py", "n/README.md"),
    # a file of github.com/amazonlinux/amazon-linux-2023, named as a source
    ("tests/node_bootstrap/test_user_data.py", "Release-Notes-Amazon-Linux-2023.1.20230719.md"),
}


def _tracked() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [ROOT / name for name in listed if (ROOT / name).is_file()]


TRACKED = _tracked()
MARKDOWN = [p for p in TRACKED if p.suffix == ".md"]
# This file names missing documents on purpose.
CODE = [
    p
    for p in TRACKED
    if (p.suffix in CODE_SUFFIXES or p.name in CODE_NAMES) and p != Path(__file__).resolve()
]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    text = FENCE.sub("", path.read_text())
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", text, re.MULTILINE):
        slug = _slug(heading)
        n = 1
        unique = slug
        while unique in found:  # GitHub numbers repeated headings: x, x-1, x-2
            unique = f"{slug}-{n}"
            n += 1
        found.add(unique)
    return frozenset(found)


def broken(target: str, base: Path, *, also: tuple[Path, ...] = ()) -> str | None:
    """Why `target` (a path relative to `base`, or to one of `also`) does not resolve, or None."""
    path_part, _, anchor = target.partition("#")
    if not path_part:
        candidates = [base]
    else:
        candidates = [d / path_part.lstrip("/") for d in (base.parent, *also)]
    found = next((c for c in candidates if c.exists()), None)
    if found is None:
        return f"{path_part} does not exist"
    if anchor and found.suffix == ".md" and anchor not in anchors(found):
        return f"{found.relative_to(ROOT)} has no heading #{anchor}"
    return None


def _relative_links(path: Path) -> list[str]:
    text = FENCE.sub("", path.read_text())
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


@pytest.mark.parametrize("doc", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_of_a_markdown_file_resolves(doc: Path) -> None:
    problems = [f"{t}: {why}" for t in _relative_links(doc) if (why := broken(t, doc))]
    assert problems == []


def test_every_markdown_file_named_in_code_exists() -> None:
    # A bare name (`runbooks.md`) may mean the file's neighbour, one at the root or one in docs/.
    problems = []
    for path in CODE:
        where = str(path.relative_to(ROOT))
        for line in path.read_text(errors="replace").splitlines():
            for token in MD_NAME.findall(line):
                if (where, token) in NOT_REFERENCES or _in_url(line, token):
                    continue
                why = broken(token, path, also=(ROOT, ROOT / "docs"))
                if why:
                    problems.append(f"{where}: {token}: {why}")
    assert problems == []


def _in_url(line: str, token: str) -> bool:
    start = line.find(token)
    word_start = max(line.rfind(c, 0, start) for c in " \t\"'(<`[") + 1
    return "://" in line[word_start:start]


def test_the_checks_catch_a_missing_file_and_a_missing_heading(tmp_path: Path) -> None:
    assert broken("PROXY_CONFIG.md", ROOT / "node_bootstrap" / "proxy.py", also=(ROOT,))
    assert broken("docs/runbooks.md#no-such-section", ROOT / "README.md")
    assert broken("docs/runbooks.md#alarms", ROOT / "README.md") is None
    assert _slug("Adding or removing the DR replica (`replicaRegion`)") == (
        "adding-or-removing-the-dr-replica-replicaregion"
    )
