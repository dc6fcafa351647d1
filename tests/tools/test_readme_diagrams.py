"""The README and docs/diagrams show what the program declares today, for every setup."""

from __future__ import annotations

from tools import plan
from tools.offline import ROOT, load_stack_config

STALE = f"diagrams are stale: run `{plan.REFRESH_COMMAND}` and commit the result"


def test_readme_and_docs_diagrams_match_the_program() -> None:
    base = plan.plan_config(load_stack_config("dev"), "Pulumi.dev.yaml")
    results = plan.all_setup_diagrams(base, stack="dev")
    diagrams = {setup: text for setup, (_, text) in results.items()}
    for setup, text in diagrams.items():
        assert "-->" in text, setup  # drawn from a real run, not an empty one
        path = ROOT / "docs" / "diagrams" / f"{setup}.mmd"
        assert path.is_file(), f"{path} is missing; {STALE}"
        assert path.read_text() == text, f"{path.name}: {STALE}"
    readme = (ROOT / "README.md").read_text()
    start = readme.index(plan.README_START) + len(plan.README_START)
    block = readme[start : readme.index(plan.README_END)]
    assert block == f"\n{plan.readme_block(diagrams)}\n", f"README.md: {STALE}"
