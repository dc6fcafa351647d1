"""Entry point the Pulumi CLI runs for `--policy-pack policy`: it only builds the pack.

`PolicyPack(...)` serves the engine and never returns, so the rules live in `policy.rules`,
where tests import them. The CLI runs this file with the pack folder as the script directory;
the repo root goes on the path so the rules import under one name everywhere.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import EnforcementLevel, PolicyPack

from policy.rules import PACK_NAME, all_policies

PolicyPack(
    name=PACK_NAME,
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=list(all_policies()),
)
