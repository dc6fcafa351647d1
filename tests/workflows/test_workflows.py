"""The CI workflows cannot run here: parse them and check the steps and permissions they need."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
# Current majors (checked against the actions' own READMEs and recent public use).
MAJORS = {
    "actions/checkout": "v7",
    "actions/setup-python": "v7",
    "pulumi/actions": "v7",
    "aws-actions/configure-aws-credentials": "v6",
}


def load(name: str) -> dict[Any, Any]:
    document = yaml.safe_load((WORKFLOWS / name).read_text())
    assert isinstance(document, dict), name
    return document


def triggers(workflow: dict[Any, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the bare key `on` as the boolean True.
    found = workflow.get(True, workflow.get("on"))
    assert isinstance(found, dict)
    return found


def steps_using(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in job["steps"] if str(s.get("uses", "")).split("@")[0] == action]


def index_of(job: dict[str, Any], step: dict[str, Any]) -> int:
    return [id(s) for s in job["steps"]].index(id(step))


def all_workflows() -> list[str]:
    return sorted(p.name for p in WORKFLOWS.glob("*.yml"))


def assert_runs_offline_tests(job: dict[str, Any]) -> None:
    uses = [s.get("uses") for s in job["steps"]]
    assert uses[:2] == [
        f"actions/checkout@{MAJORS['actions/checkout']}",
        f"actions/setup-python@{MAJORS['actions/setup-python']}",
    ]
    assert str(job["steps"][1]["with"]["python-version"]) == "3.11"
    runs = [s["run"].strip() for s in job["steps"] if "run" in s]
    assert "./dev test" in runs
    assert any("apt-packages.txt" in r for r in runs)  # ./dev installs them only as root


def schema_check(*paths: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "check_jsonschema", "--builtin-schema"]
    return subprocess.run(
        [*command, "vendor.github-workflows", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_workflows_match_the_github_workflow_schema() -> None:
    # check-jsonschema ships the schema (SchemaStore's github-workflow): no network needed.
    done = schema_check(*(WORKFLOWS / name for name in all_workflows()))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_schema_check_catches_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("name: x\non: push\njobs:\n  a:\n    steps:\n      - run: echo\n")
    done = schema_check(broken)
    assert done.returncode == 1
    assert "'runs-on' is a required property" in done.stdout


def test_workflows_exist_and_every_action_is_on_its_current_major() -> None:
    assert {"pull-request.yml", "main.yml"} <= set(all_workflows())
    for name in all_workflows():
        text = (WORKFLOWS / name).read_text()
        for action, version in re.findall(r"uses:\s*([\w.-]+/[\w.-]+)@(\S+)", text):
            assert action in MAJORS, f"{name}: unreviewed action {action}"
            assert version == MAJORS[action], f"{name}: {action}@{version}"


def test_pull_requests_run_the_tests_then_preview_each_stack_with_the_policy_pack() -> None:
    workflow = load("pull-request.yml")
    assert triggers(workflow)["pull_request"]["branches"] == ["main"]
    assert workflow["permissions"] == {"contents": "read"}
    jobs = workflow["jobs"]
    assert_runs_offline_tests(jobs["test"])

    preview = jobs["preview"]
    assert preview["needs"] == "test"
    assert preview["strategy"]["matrix"]["stack"] == ["dev", "prod"]
    assert preview["permissions"]["pull-requests"] == "write"
    assert preview["permissions"]["id-token"] == "write"
    [pulumi] = steps_using(preview, "pulumi/actions")
    assert pulumi["with"]["command"] == "preview"
    assert pulumi["with"]["stack-name"] == "${{ matrix.stack }}"
    assert pulumi["with"]["comment-on-pr"] is True
    assert pulumi["with"]["policyPacks"] == "policy"
    [aws] = steps_using(preview, "aws-actions/configure-aws-credentials")
    assert "role-to-assume" in aws["with"]
    assert index_of(preview, aws) < index_of(preview, pulumi)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_main_deploys_each_environment_with_oidc_credentials(stack: str) -> None:
    workflow = load("main.yml")
    assert triggers(workflow)["push"]["branches"] == ["main"]
    jobs = workflow["jobs"]
    assert_runs_offline_tests(jobs["test"])
    job = jobs[f"up-{stack}"]
    assert job["environment"] == stack
    assert job["permissions"]["id-token"] == "write"
    [aws] = steps_using(job, "aws-actions/configure-aws-credentials")
    assert aws["with"]["role-to-assume"] == "${{ vars.AWS_DEPLOY_ROLE_ARN }}"
    assert not {"aws-access-key-id", "aws-secret-access-key"} & set(aws["with"])
    [pulumi] = steps_using(job, "pulumi/actions")
    assert pulumi["with"]["command"] == "up"
    assert pulumi["with"]["stack-name"] == stack
    assert pulumi["with"]["policyPacks"] == "policy"
    assert index_of(job, aws) < index_of(job, pulumi)


def test_prod_waits_for_dev_and_deployments_are_never_cancelled() -> None:
    workflow = load("main.yml")
    assert workflow["jobs"]["up-dev"]["needs"] == "test"
    assert workflow["jobs"]["up-prod"]["needs"] == "up-dev"
    assert workflow["concurrency"]["cancel-in-progress"] is False


def test_what_the_workflows_point_at_exists() -> None:
    assert (ROOT / "policy" / "PulumiPolicy.yaml").is_file()
    assert os.access(ROOT / "dev", os.X_OK)
    assert (ROOT / "requirements.txt").is_file()
    venv = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["runtime"]["options"]["virtualenv"]
    assert venv == ".venv"  # the workflows create exactly this one
    pack = yaml.safe_load((ROOT / "policy" / "PulumiPolicy.yaml").read_text())
    assert pack["runtime"]["name"] == "python"
    pack_venv = (ROOT / "policy" / pack["runtime"]["options"]["virtualenv"]).resolve()
    assert pack_venv == (ROOT / venv).resolve()


def test_the_ephemeral_stack_workflow_runs_only_on_demand_with_oidc() -> None:
    workflow = load("e2e.yml")
    assert set(triggers(workflow)) == {"workflow_dispatch"}
    job = workflow["jobs"]["ephemeral-stack"]
    assert job["permissions"]["id-token"] == "write"
    [aws] = steps_using(job, "aws-actions/configure-aws-credentials")
    assert "role-to-assume" in aws["with"]
    [test] = [s for s in job["steps"] if "tests/e2e" in s.get("run", "")]
    assert test["env"]["QUORUM_HA_E2E"] == "1"
    assert "-m e2e" in test["run"]
    assert index_of(job, aws) < index_of(job, test)
