"""docs/runbooks.md names real things: resources the program declares, units its machines run."""

from __future__ import annotations

import re

from domain.user_data import user_data_texts
from tools.offline import ROOT, load_stack_config, run_offline

RUNBOOKS = (ROOT / "docs" / "runbooks.md").read_text()


def test_every_resource_the_runbooks_target_is_declared() -> None:
    run = run_offline(load_stack_config("dev"), stack="dev")
    declared = {r.name for r in run.resources}
    named = set(re.findall(r"\$\(urn ([\w$-]+)\)", RUNBOOKS))
    named |= set(re.findall(r"(quorum-ha-[\w-]+-seed)", RUNBOOKS))
    assert len(named) >= 8
    for name in named:
        concrete = name.replace("$NODE", "pair-1")
        assert concrete in declared, (
            f"runbooks.md names {name}, which the program does not declare"
        )

    units = set(re.findall(r"systemctl \w+ ([\w\- ]+)\"", RUNBOOKS))
    machine = next(r for r in run.resources if r.type == "aws:ec2/instance:Instance")
    boot = "\n".join(text for _, text in user_data_texts(machine.inputs["userDataBase64"]))
    for unit in {u for group in units for u in group.split()}:
        assert f"{unit}.service" in boot, f"runbooks.md restarts {unit}, which no machine runs"
