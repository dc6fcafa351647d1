"""docs/architecture.md and docs/diagrams show what the program declares today, for every setup."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import plan
from tools.offline import ROOT, load_stack_config

STALE = f"diagrams are stale: run `{plan.REFRESH_COMMAND}` and commit the result"


def test_architecture_doc_and_diagram_files_match_the_program() -> None:
    base = plan.plan_config(load_stack_config("dev"), "Pulumi.dev.yaml")
    results = plan.all_setup_diagrams(base, stack="dev")
    diagrams = {setup: text for setup, (_, text) in results.items()}
    for setup, text in diagrams.items():
        assert "-->" in text, setup  # drawn from a real run, not an empty one
        path = ROOT / "docs" / "diagrams" / f"{setup}.mmd"
        assert path.is_file(), f"{path} is missing; {STALE}"
        assert path.read_text() == text, f"{path.name}: {STALE}"
    doc = (ROOT / "docs" / "architecture.md").read_text()
    start = doc.index(plan.DIAGRAMS_START) + len(plan.DIAGRAMS_START)
    block = doc[start : doc.index(plan.DIAGRAMS_END)]
    assert block == f"\n{plan.diagrams_block(diagrams)}\n", f"docs/architecture.md: {STALE}"


def test_the_dev_plan_command_plans_the_real_stack_and_redraws_the_same_diagram(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # What `./dev plan` runs, with the diagram written aside instead of over docs/diagrams.
    assert plan.main(["--stack", "dev", "--diagram-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Policy pack: 0 violation(s)" in out
    assert "AWS rules: 0 violation(s)" in out
    assert "aws:rds/instance:Instance" in out and "[secret]" in out
    setup = str(load_stack_config("dev")["quorum-ha:setup"])
    drawn = (tmp_path / f"{setup}.mmd").read_text()
    assert drawn == (ROOT / "docs" / "diagrams" / f"{setup}.mmd").read_text(), STALE
