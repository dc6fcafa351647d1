"""The CI workflows cannot run here: parse them and check the steps and permissions they need."""

from __future__ import annotations

import json
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


# ---------------------------------------------------------------- role sessions (docs/ci.md)

CI_DOC = ROOT / "docs" / "ci.md"
# A role's session must outlive the job that assumed it, with room for a slow last step.
SESSION_MARGIN_SECONDS = 15 * 60
# STS: DurationSeconds from 900 up to the role's MaxSessionDuration, which is 1-12 hours.
STS_MIN_DURATION, IAM_MAX_SESSION = 900, 43200
ROLE_ROW = re.compile(r"^\|\s*`(AWS_\w+_ROLE_ARN)`\s*\|[^|]*\|\s*(\d+)\s*\|\s*$", re.MULTILINE)


def documented_max_sessions() -> dict[str, int]:
    """Each role's MaxSessionDuration as docs/ci.md tells the account owner to set it."""
    return {name: int(seconds) for name, seconds in ROLE_ROW.findall(CI_DOC.read_text())}


def role_jobs() -> list[tuple[str, str]]:
    found = []
    for name in all_workflows():
        for job_id, job in load(name)["jobs"].items():
            if steps_using(job, "aws-actions/configure-aws-credentials"):
                found.append((name, job_id))
    return found


def test_every_role_the_workflows_assume_is_documented_with_its_max_session() -> None:
    documented = documented_max_sessions()
    used = set()
    for name, job_id in role_jobs():
        [aws] = steps_using(load(name)["jobs"][job_id], "aws-actions/configure-aws-credentials")
        used.add(re.fullmatch(r"\$\{\{ vars\.(\w+) \}\}", aws["with"]["role-to-assume"])[1])  # type: ignore[index]
    assert used and used <= set(documented), sorted(used - set(documented))
    assert all(3600 <= seconds <= IAM_MAX_SESSION for seconds in documented.values()), documented


@pytest.mark.parametrize(("workflow", "job_id"), role_jobs())
def test_a_role_session_outlives_the_job_that_assumed_it(workflow: str, job_id: str) -> None:
    job = load(workflow)["jobs"][job_id]
    [aws] = steps_using(job, "aws-actions/configure-aws-credentials")
    role = aws["with"]["role-to-assume"].removeprefix("${{ vars.").removesuffix(" }}")
    duration = int(aws["with"]["role-duration-seconds"])
    timeout = int(job["timeout-minutes"]) * 60
    assert duration >= timeout + SESSION_MARGIN_SECONDS, (workflow, job_id, duration, timeout)
    assert STS_MIN_DURATION <= duration <= documented_max_sessions()[role], (workflow, job_id)


# ---------------------------------------------------------------- who deploys, one at a time


def pulumi_jobs(workflow: str, command: str) -> dict[str, dict[str, Any]]:
    jobs = load(workflow)["jobs"]
    return {
        job_id: job
        for job_id, job in jobs.items()
        if any(
            s.get("with", {}).get("command") == command for s in steps_using(job, "pulumi/actions")
        )
    }


def test_deployments_share_one_queue_whatever_the_branch() -> None:
    concurrency = load("main.yml")["concurrency"]
    assert "${{" not in concurrency["group"]  # a group with the ref queues per branch
    assert concurrency["group"] == "deploy"
    assert concurrency["cancel-in-progress"] is False


def test_only_main_deploys_even_when_run_by_hand_from_another_branch() -> None:
    assert "workflow_dispatch" in triggers(load("main.yml"))
    deploys = pulumi_jobs("main.yml", "up")
    assert set(deploys) == {"up-dev", "up-prod"}
    for job in deploys.values():
        assert job["if"] == "github.ref == 'refs/heads/main'"


# ---------------------------------------------------------------- one shared state backend

BACKEND = "${{ vars.PULUMI_BACKEND_URL }}"
PASSPHRASE = "${{ secrets.PULUMI_CONFIG_PASSPHRASE }}"
BACKEND_CHECK = "Pulumi backend is the team's S3 bucket"


def pulumi_steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Steps that run the Pulumi CLI: the action (not its install-only use) or `pulumi` in run."""
    return [
        s
        for s in job["steps"]
        if (s.get("uses", "").startswith("pulumi/actions@") and "command" in s.get("with", {}))
        or re.search(r"(^|[\s;(|&])pulumi\s", s.get("run", ""))
        or "pytest -m e2e" in s.get("run", "")
    ]


def pulumi_job_ids() -> list[tuple[str, str]]:
    return [
        (name, job_id)
        for name in all_workflows()
        for job_id, job in load(name)["jobs"].items()
        if pulumi_steps(job)
    ]


def bash(
    script: str, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    # How GitHub runs a `run:` step on Linux: bash --noprofile --norc -eo pipefail {0}.
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], **env},
        cwd=cwd,
        timeout=30,
        check=False,
    )


def backend_check(job: dict[str, Any]) -> dict[str, Any]:
    [step] = [s for s in job["steps"] if s.get("name") == BACKEND_CHECK]
    return step


def test_no_workflow_keeps_state_locally_or_in_pulumi_cloud() -> None:
    for name in all_workflows():
        text = (WORKFLOWS / name).read_text()
        for forbidden in ("--local", "file://", "api.pulumi.com", "PULUMI_ACCESS_TOKEN"):
            assert forbidden not in text, f"{name}: {forbidden}"


@pytest.mark.parametrize(("workflow", "job_id"), pulumi_job_ids())
def test_every_pulumi_job_checks_then_uses_the_shared_backend_and_passphrase(
    workflow: str, job_id: str
) -> None:
    job = load(workflow)["jobs"][job_id]
    check = backend_check(job)
    assert check["env"]["PULUMI_BACKEND_URL"] == BACKEND
    for step in pulumi_steps(job):
        assert index_of(job, check) < index_of(job, step), step
        login_only = re.fullmatch(r'pulumi login "\$PULUMI_BACKEND_URL"\s*', step.get("run", ""))
        if not login_only:  # everything that reads or writes a stack decrypts its secrets
            assert step["env"]["PULUMI_CONFIG_PASSPHRASE"] == PASSPHRASE, step
        if "uses" in step:
            assert step["with"]["cloud-url"] == BACKEND
        elif "pulumi login" in step["run"]:
            assert 'pulumi login "$PULUMI_BACKEND_URL"' in step["run"]
            assert step["env"]["PULUMI_BACKEND_URL"] == BACKEND


def test_the_backend_checks_are_one_script() -> None:
    scripts = {backend_check(load(w)["jobs"][j])["run"] for w, j in pulumi_job_ids()}
    assert len(scripts) == 1


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("s3://acme-pulumi-state?region=eu-west-1&awssdk=v2", True),
        ("s3://acme-pulumi-state/quorum-ha?region=us-east-1", True),
        ("", False),
        ("file:///home/me/.pulumi", False),
        ("https://api.pulumi.com", False),
        ("s3://", False),
    ],
)
def test_the_backend_check_admits_only_an_s3_bucket(url: str, ok: bool) -> None:
    [(workflow, job_id), *_] = pulumi_job_ids()
    done = bash(backend_check(load(workflow)["jobs"][job_id])["run"], {"PULUMI_BACKEND_URL": url})
    assert (done.returncode == 0) is ok, done.stdout + done.stderr
    if not ok:
        assert "vars.PULUMI_BACKEND_URL" in done.stdout
        assert f"'{url}'" in done.stdout
        assert "s3://<bucket>?region=<region>" in done.stdout


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_the_readme_logs_in_to_the_backend_the_workflows_admit() -> None:
    section = readme_section("Deploying for real")
    commands = "\n".join(re.findall(r"```sh\n(.*?)```", section, re.DOTALL))
    assert "--local" not in commands and "file://" not in commands
    [url] = re.findall(r"pulumi login '([^']+)'", commands)
    [(workflow, job_id), *_] = pulumi_job_ids()
    done = bash(backend_check(load(workflow)["jobs"][job_id])["run"], {"PULUMI_BACKEND_URL": url})
    assert done.returncode == 0, done.stdout
    for needed in ("put-bucket-versioning", "PULUMI_CONFIG_PASSPHRASE", "awskms://", "locks/"):
        assert needed in section, needed


# ---------------------------------------------------------------- e2e: nothing left running

E2E_STACK = "e2e-${{ github.run_id }}"


def test_the_e2e_stack_is_named_before_the_test_so_cleanup_can_find_it() -> None:
    workflow = load("e2e.yml")
    assert workflow["env"]["QUORUM_HA_E2E_STACK"] == E2E_STACK
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            assert "QUORUM_HA_E2E_STACK" not in step.get("env", {}), step


def test_a_cleanup_job_runs_after_the_test_whatever_its_outcome() -> None:
    jobs = load("e2e.yml")["jobs"]
    cleanup, test = jobs["cleanup"], jobs["ephemeral-stack"]
    assert cleanup["needs"] == "ephemeral-stack"
    # A job of its own: steps of a cancelled job get minutes, not the half hour a destroy takes.
    assert cleanup["if"] == "always()"
    assert cleanup["environment"] == test["environment"]
    assert cleanup["permissions"]["id-token"] == "write"
    [aws] = steps_using(cleanup, "aws-actions/configure-aws-credentials")
    assert aws["with"]["role-to-assume"] == "${{ vars.AWS_E2E_ROLE_ARN }}"
    destroy = cleanup_step(cleanup)
    assert index_of(cleanup, aws) < index_of(cleanup, destroy)


def cleanup_step(job: dict[str, Any]) -> dict[str, Any]:
    [step] = [s for s in job["steps"] if "pulumi destroy" in s.get("run", "")]
    return step


FAKE_PULUMI = """#!/usr/bin/env bash
printf '%s\\n' "$*" >> "$FAKE_LOG"
case "$1 $2" in
  "stack ls") printf '%s' "$FAKE_STACKS"; exit "${FAKE_LS_RC:-0}" ;;
  "destroy "*) exit "${FAKE_DESTROY_RC:-0}" ;;
esac
exit "${FAKE_OTHER_RC:-0}"
"""


@pytest.fixture
def fake_pulumi(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "pulumi"
    stub.write_text(FAKE_PULUMI)
    stub.chmod(0o755)
    log = tmp_path / "calls"
    log.touch()
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_LOG": str(log)}


def run_cleanup(
    fake: dict[str, str], **env: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    step = cleanup_step(load("e2e.yml")["jobs"]["cleanup"])
    full = {**fake, "QUORUM_HA_E2E_STACK": "e2e-4242", **env}
    done = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
        capture_output=True,
        text=True,
        env=full,
        timeout=30,
        check=False,
    )
    return done, Path(fake["FAKE_LOG"]).read_text().splitlines()


@pytest.mark.parametrize(
    "listed",
    ['[{"name":"e2e-4242"}]', '[{"name":"organization/quorum-ha/e2e-4242"}]'],
)
def test_cleanup_destroys_then_removes_a_stack_the_test_left(
    fake_pulumi: dict[str, str], listed: str
) -> None:
    done, calls = run_cleanup(
        fake_pulumi, FAKE_STACKS=json.dumps([{"name": "e2e-1"}, *json.loads(listed)])
    )
    assert done.returncode == 0, done.stderr
    destroy = next(i for i, c in enumerate(calls) if c.startswith("destroy "))
    remove = next(i for i, c in enumerate(calls) if c.startswith("stack rm "))
    assert destroy < remove
    assert "--yes" in calls[destroy] and "--stack e2e-4242" in calls[destroy]
    assert "--yes" in calls[remove] and "--stack e2e-4242" in calls[remove]
    assert not any("e2e-1 " in c or c.endswith("e2e-1") for c in calls)


def test_cleanup_does_nothing_when_the_test_removed_its_stack(fake_pulumi: dict[str, str]) -> None:
    done, calls = run_cleanup(fake_pulumi, FAKE_STACKS='[{"name":"e2e-1"},{"name":"e2e-42420"}]')
    assert done.returncode == 0, done.stderr
    assert not [c for c in calls if c.startswith(("destroy", "stack rm", "refresh"))]
    assert "e2e-4242" in done.stdout  # says what it looked for


@pytest.mark.parametrize(
    ("env", "call"), [({"FAKE_DESTROY_RC": "1"}, "destroy"), ({"FAKE_LS_RC": "1"}, "stack ls")]
)
def test_cleanup_fails_loudly_when_it_cannot_clean(
    fake_pulumi: dict[str, str], env: dict[str, str], call: str
) -> None:
    done, calls = run_cleanup(fake_pulumi, FAKE_STACKS='[{"name":"e2e-4242"}]', **env)
    assert done.returncode != 0
    assert any(c.startswith(call) for c in calls)
    assert not any(c.startswith("stack rm") for c in calls)


def test_every_run_script_passes_shellcheck(tmp_path: Path) -> None:
    for name in all_workflows():
        for job_id, job in load(name)["jobs"].items():
            for i, step in enumerate(job["steps"]):
                if "run" not in step:
                    continue
                script = tmp_path / f"{name}-{job_id}-{i}.sh"
                # ${{ }} is substituted by GitHub before bash runs: stand in a plain word.
                body = re.sub(r"\$\{\{[^}]*\}\}", "x", step["run"])
                script.write_text("#!/usr/bin/env bash\nset -eo pipefail\n" + body)
                done = subprocess.run(
                    ["shellcheck", str(script)], capture_output=True, text=True, check=False
                )
                assert done.returncode == 0, f"{name} {job_id} step {i}:\n{done.stdout}"
