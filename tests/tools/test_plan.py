"""`python -m tools.plan`: tree, masking, placeholders for encrypted config, errors, diagrams."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pulumi
import pytest
from eth_keyfile import decode_keyfile_json
from nacl.public import PrivateKey

from tools import plan
from tools.offline import ROOT

Program = Callable[[], None]
STACK_FILE = "config:\n  aws:region: us-east-1\n  quorum-ha:setup: pair\n"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "Pulumi.dev.yaml").write_text(STACK_FILE)
    (tmp_path / "architecture.md").write_text(
        "# x\n\nintro\n\n<!-- diagrams:start -->\nold\n<!-- diagrams:end -->\n\nrest\n"
    )
    return tmp_path


def test_plan_prints_the_tree_with_secrets_masked_and_writes_the_diagram(
    project: Path, synthetic: Callable[..., Program], capsys: pytest.CaptureFixture[str]
) -> None:
    status = plan.main(
        ["--stack", "dev", "--diagram-dir", str(project / "diagrams")],
        root=project,
        program=synthetic(),
    )
    out = capsys.readouterr().out
    assert status == 0
    assert "Plan of stack 'dev' (setup pair), offline under mocks: " in out
    assert "   │  ├─ aws:rds/instance:Instance  db-primary  engine=postgres" in out
    assert "keys-tessera-value  secret inputs: secretString = [secret]" in out
    assert "tesseraKey: [secret]" in out
    assert "c2VjcmV0" not in out  # neither secret's text
    assert "Policy pack: 0 violation(s)" in out
    assert (project / "diagrams" / "pair.mmd").read_text().startswith("%% Setup 1")


def test_a_refused_config_prints_one_line_and_exits_2(
    project: Path, synthetic: Callable[..., Program], capsys: pytest.CaptureFixture[str]
) -> None:
    message = "quorum-ha:setup: 'triple' is not valid; allowed: 'pair', 'full' or 'tessera'"
    status = plan.main(["--stack", "dev"], root=project, program=synthetic(fail_with=message))
    captured = capsys.readouterr()
    assert status == 2
    assert captured.err == f"error: {message}\n"
    assert "Traceback" not in captured.out + captured.err


def test_a_missing_stack_file_exits_2(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert plan.main(["--stack", "qa"], root=project) == 2
    assert capsys.readouterr().err == f"error: no stack file Pulumi.qa.yaml in {project}\n"


def test_policy_violations_make_the_plan_fail(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def unrotated_key() -> None:
        import pulumi_aws as aws

        aws.kms.Key("keys", enable_key_rotation=False)

    assert plan.main(["--stack", "dev"], root=project, program=unrotated_key) == 1
    assert "[kms-key-rotation] keys: enableKeyRotation is not true" in capsys.readouterr().out


def test_the_plan_reports_what_aws_would_refuse_and_fails(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def long_target_group() -> None:
        import pulumi_aws as aws

        aws.lb.TargetGroup("a-target-group-named-rather-long", port=80, protocol="TCP")

    assert plan.main(["--stack", "dev"], root=project, program=long_target_group) == 1
    out = capsys.readouterr().out
    assert "Policy pack: 0 violation(s)" in out and "AWS rules: 1 violation(s)" in out
    assert "a-target-group-named-rather-long: name" in out


def test_encrypted_values_get_consistent_placeholders_and_a_note() -> None:
    raw = {
        "quorum-ha:setup": "pair",
        "quorum-ha:tesseraPublicKey": "BULeR8JyUWhiuuCMU/HLA0Q5pzkYT+cHII3ZKBey3Bo=",
        "quorum-ha:tesseraPrivateKey": {"secure": "v1:abc"},
        "quorum-ha:quorumAccountKeystore": {"secure": "v1:def"},
        "quorum-ha:quorumAccountPassword": {"secure": "v1:ghi"},
        "quorum-ha:tags": {"team": {"secure": "v1:jkl"}},
    }
    config = plan.plan_config(raw, "Pulumi.prod.yaml")
    private = base64.b64decode(config.secrets["quorum-ha:tesseraPrivateKey"])
    public = base64.b64encode(bytes(PrivateKey(private).public_key)).decode()
    assert config.config["quorum-ha:tesseraPublicKey"] == public
    keystore = json.loads(config.secrets["quorum-ha:quorumAccountKeystore"])
    password = config.secrets["quorum-ha:quorumAccountPassword"].encode()
    assert len(decode_keyfile_json(keystore, password)) == 32
    assert config.secrets["quorum-ha:tags"] == {"team": "placeholder"}
    assert config.notes == [
        "Pulumi.prod.yaml has encrypted values (quorum-ha:quorumAccountKeystore, "
        "quorum-ha:quorumAccountPassword, quorum-ha:tags, quorum-ha:tesseraPrivateKey): they "
        "cannot be decrypted offline, so this plan uses generated placeholders for them"
    ]


def test_placeholders_reach_the_program_as_secrets(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "Pulumi.dev.yaml").write_text(
        STACK_FILE + "  quorum-ha:dbPassword:\n    secure: v1:AAAA\n"
    )
    seen: list[str] = []

    def program() -> None:
        value = pulumi.Config("quorum-ha").require_secret("dbPassword")
        pulumi.export("password", value)
        seen.append("ran")

    assert plan.main(["--stack", "dev"], root=project, program=program) == 0
    out = capsys.readouterr().out
    assert seen == ["ran"]
    assert out.startswith("note: Pulumi.dev.yaml has encrypted values (quorum-ha:dbPassword)")
    assert "password: [secret]" in out


def test_all_setups_rewrite_only_the_diagram_block_of_the_markdown_file(
    project: Path, synthetic: Callable[..., Program], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--all-setups",
        "--diagram-dir",
        str(project / "d"),
        "--markdown",
        str(project / "architecture.md"),
    ]
    assert plan.main(argv, root=project, program=synthetic()) == 0
    doc = (project / "architecture.md").read_text()
    assert doc.startswith("# x\n\nintro\n\n<!-- diagrams:start -->\n")
    assert doc.endswith("<!-- diagrams:end -->\n\nrest\n")
    assert "old" not in doc
    assert doc.count("```mermaid\n") == 3
    for setup in plan.SETUPS:
        assert (project / "d" / f"{setup}.mmd").read_text() in doc
    assert plan.main(argv, root=project, program=synthetic()) == 0
    assert (project / "architecture.md").read_text() == doc
    assert "updated" in capsys.readouterr().out


def test_all_setups_keep_the_stacks_own_counts_and_override_the_others(project: Path) -> None:
    seen: list[tuple[str, int, int]] = []

    def program() -> None:
        config = pulumi.Config("quorum-ha")
        seen.append(
            (
                config.require("setup"),
                config.require_int("quorumNodes"),
                config.require_int("tesseraNodes"),
            )
        )

    base = plan.plan_config(
        {"quorum-ha:setup": "full", "quorum-ha:quorumNodes": 5, "quorum-ha:tesseraNodes": 3}, "x"
    )
    plan.all_setup_diagrams(base, stack="dev", program=program)
    assert seen == [("pair", 2, 2), ("full", 5, 3), ("tessera", 1, 2)]


def test_markdown_without_all_setups_is_refused(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert plan.main(["--markdown", "architecture.md"], root=project) == 2
    assert "--markdown needs --all-setups" in capsys.readouterr().err


def test_the_real_program_refusing_a_config_gives_its_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "Pulumi.dev.yaml").write_text(STACK_FILE.replace("setup: pair", "setup: triple"))
    assert plan.main(["--stack", "dev"], root=tmp_path, program=ROOT / "__main__.py") == 2
    captured = capsys.readouterr()
    # The wording is the program's; the plan's part is one line, prefixed, nothing else.
    assert captured.err.startswith("error: quorum-ha:setup: 'triple' ")
    assert captured.err.count("\n") == 1
    assert captured.out == ""
