"""Offline plan: what a stack would declare, as a tree, plus its architecture diagram.

    python -m tools.plan --stack dev [--diagram-dir docs/diagrams]
    python -m tools.plan --all-setups --diagram-dir docs/diagrams --markdown docs/architecture.md

No cloud account and no Pulumi CLI: the program runs under Pulumi's mocks (tools.offline) with
the stack file's config. Encrypted (`secure:`) values cannot be decrypted here, so the plan
substitutes generated placeholders and says so. The policy pack's rules run over the result.
Exit codes: 0 planned, 1 policy violations, 2 the program refused the config (or failed).
"""

from __future__ import annotations

import argparse
import base64
import json
import secrets
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nacl.public import PrivateKey

from policy.harness import check_resources
from tools import aws_rules, diagram
from tools.offline import (
    MASK,
    ROOT,
    DeclaredResource,
    OfflineProgramError,
    OfflineRun,
    load_stack_config,
    run_offline,
)

NAMESPACE = "quorum-ha"
SETUPS = ("pair", "full", "tessera")
# The smallest HA shape of each setup: what docs/architecture.md shows for setups other than the
# stack's.
SETUP_COUNTS = {"pair": (2, 2), "full": (2, 2), "tessera": (1, 2)}
DIAGRAMS_START = "<!-- diagrams:start -->"
DIAGRAMS_END = "<!-- diagrams:end -->"
REFRESH_COMMAND = (
    "python -m tools.plan --all-setups --diagram-dir docs/diagrams --markdown docs/architecture.md"
)
VALUE_WIDTH = 60

# The properties worth a glance per resource type (dotted paths into the engine's inputs).
KEY_PROPERTIES: dict[str, tuple[str, ...]] = {
    "aws:ec2/vpc:Vpc": ("cidrBlock",),
    "aws:ec2/subnet:Subnet": ("cidrBlock", "availabilityZone", "mapPublicIpOnLaunch"),
    "aws:ec2/vpcEndpoint:VpcEndpoint": ("serviceName", "vpcEndpointType"),
    "aws:ec2/natGateway:NatGateway": ("connectivityType",),
    "aws:ec2/securityGroup:SecurityGroup": ("description",),
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": (
        "ipProtocol",
        "fromPort",
        "toPort",
        "cidrIpv4",
        "cidrIpv6",
        "referencedSecurityGroupId",
    ),
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": (
        "ipProtocol",
        "fromPort",
        "toPort",
        "cidrIpv4",
        "referencedSecurityGroupId",
    ),
    "aws:ec2/securityGroupRule:SecurityGroupRule": (
        "type",
        "protocol",
        "fromPort",
        "toPort",
        "cidrBlocks",
        "sourceSecurityGroupId",
    ),
    "aws:ec2/instance:Instance": (
        "instanceType",
        "subnetId",
        "metadataOptions.httpTokens",
        "rootBlockDevice.encrypted",
    ),
    "aws:ebs/volume:Volume": ("size", "type", "encrypted", "availabilityZone"),
    "aws:rds/instance:Instance": (
        "engine",
        "engineVersion",
        "instanceClass",
        "multiAz",
        "replicateSourceDb",
        "backupRetentionPeriod",
        "deletionProtection",
    ),
    "aws:rds/parameterGroup:ParameterGroup": ("family",),
    "aws:lb/loadBalancer:LoadBalancer": (
        "loadBalancerType",
        "internal",
        "enableCrossZoneLoadBalancing",
    ),
    "aws:lb/listener:Listener": ("port", "protocol"),
    "aws:lb/targetGroup:TargetGroup": (
        "port",
        "protocol",
        "targetType",
        "deregistrationDelay",
        "healthCheck.path",
    ),
    "aws:ecs/service:Service": (
        "desiredCount",
        "launchType",
        "deploymentMinimumHealthyPercent",
        "deploymentMaximumPercent",
    ),
    "aws:ecs/taskDefinition:TaskDefinition": ("family", "cpu", "memory"),
    "aws:ecr/repository:Repository": ("name",),
    "aws:kms/key:Key": ("enableKeyRotation", "deletionWindowInDays"),
    "aws:kms/alias:Alias": ("name",),
    "aws:secretsmanager/secret:Secret": ("name",),
    "aws:cloudwatch/logGroup:LogGroup": ("name", "retentionInDays"),
    "aws:route53/zone:Zone": ("name",),
    "aws:route53/record:Record": ("name", "type", "records"),
    "aws:iam/role:Role": ("name",),
}


@dataclass(frozen=True)
class PlanConfig:
    """A stack's config ready for run_offline, and what had to be substituted."""

    config: dict[str, Any]
    secrets: dict[str, Any]
    notes: list[str] = field(default_factory=list)


class PlanError(Exception):
    """The plan cannot run: the message is the one line the operator sees."""


def _generated_tessera_pair() -> tuple[str, str]:
    key = PrivateKey.generate()
    return (
        base64.b64encode(bytes(key)).decode(),
        base64.b64encode(bytes(key.public_key)).decode(),
    )


def _generated_keystore(password: str) -> str:
    # Imported here: about a second of import (py_ecc) that plans without a keystore skip.
    from eth_keyfile import create_keyfile_json  # noqa: PLC0415 - see above

    # Few iterations: the placeholder only has to unlock, not to resist guessing.
    keystore = create_keyfile_json(secrets.token_bytes(32), password.encode(), iterations=2)
    return json.dumps(keystore)


def _is_secure(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"secure"}


def _has_secure(value: Any) -> bool:
    if _is_secure(value):
        return True
    if isinstance(value, dict):
        return any(_has_secure(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_secure(v) for v in value)
    return False


def _placeholder(value: Any) -> Any:
    if _is_secure(value):
        return "placeholder"
    if isinstance(value, dict):
        return {k: _placeholder(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_placeholder(v) for v in value]
    return value


def plan_config(raw: Mapping[str, Any], stack_file: str) -> PlanConfig:
    """Split a stack file's config into plain values and placeholders for its secure ones."""
    config = {k: v for k, v in raw.items() if not _has_secure(v)}
    encrypted = sorted(k for k, v in raw.items() if _has_secure(v))
    substituted: dict[str, Any] = {}
    short = {k.removeprefix(f"{NAMESPACE}:"): k for k in encrypted}
    # Key material must be valid for the program to accept it: generate a consistent set.
    if "tesseraPrivateKey" in short:
        private, public = _generated_tessera_pair()
        substituted[short.pop("tesseraPrivateKey")] = private
        public_key = f"{NAMESPACE}:tesseraPublicKey"
        if public_key in config:
            config[public_key] = public
    if "quorumAccountKeystore" in short or "quorumAccountPassword" in short:
        password = secrets.token_hex(16)
        keystore_key = short.pop("quorumAccountKeystore", f"{NAMESPACE}:quorumAccountKeystore")
        password_key = short.pop("quorumAccountPassword", f"{NAMESPACE}:quorumAccountPassword")
        config.pop(keystore_key, None)
        config.pop(password_key, None)
        substituted[keystore_key] = _generated_keystore(password)
        substituted[password_key] = password
    for key in short.values():
        substituted[key] = _placeholder(raw[key])
    notes = []
    if encrypted:
        notes.append(
            f"{stack_file} has encrypted values ({', '.join(encrypted)}): they cannot be "
            "decrypted offline, so this plan uses generated placeholders for them"
        )
    return PlanConfig(config=config, secrets=substituted, notes=notes)


def _setup_config(base: Mapping[str, Any], setup: str) -> dict[str, Any]:
    """The stack's config for `setup`: its own setup as configured, the others smallest-HA.

    Keeping the stack's own counts makes `--diagram-dir` of one stack and `--all-setups` write
    the same file for that setup.
    """
    if str(base.get(f"{NAMESPACE}:setup", "pair")) == setup:
        return {**base, f"{NAMESPACE}:setup": setup}
    quorum, tessera = SETUP_COUNTS[setup]
    return {
        **base,
        f"{NAMESPACE}:setup": setup,
        f"{NAMESPACE}:quorumNodes": quorum,
        f"{NAMESPACE}:tesseraNodes": tessera,
    }


# ---------------------------------------------------------------- the tree


def _short(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= VALUE_WIDTH else text[: VALUE_WIDTH - 3] + "..."


def _dig(value: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def key_properties(resource: DeclaredResource) -> list[str]:
    """`key=value` for the resource type's interesting inputs, secrets shown as [secret]."""
    masked = resource.masked_inputs
    paths = KEY_PROPERTIES.get(resource.type, ("name",))
    shown = []
    for path in paths:
        value = _dig(masked, path)
        if value is not None:
            shown.append(f"{path}={_short(value)}")
    hidden = sorted(p for p in resource.secret_paths if "." not in p and "[" not in p)
    if hidden:
        shown.append(f"secret inputs: {', '.join(hidden)} = {MASK}")
    return shown


def render_tree(run: OfflineRun) -> str:
    """The declared resources as a tree by parent, sorted by name."""
    urns = {r.urn for r in run.resources}
    children: dict[str, list[DeclaredResource]] = {}
    roots: list[DeclaredResource] = []
    for resource in sorted(run.resources, key=diagram.natural_key):
        if resource.parent_urn in urns:
            children.setdefault(resource.parent_urn, []).append(resource)
        else:
            roots.append(resource)
    lines: list[str] = []

    def walk(items: Sequence[DeclaredResource], prefix: str) -> None:
        for i, resource in enumerate(items):
            last = i == len(items) - 1
            props = "  ".join(key_properties(resource))
            lines.append(
                f"{prefix}{'└─ ' if last else '├─ '}{resource.type}  {resource.name}"
                + (f"  {props}" if props else "")
            )
            walk(children.get(resource.urn, []), prefix + ("   " if last else "│  "))

    walk(roots, "")
    return "\n".join(lines)


def render_outputs(run: OfflineRun) -> str:
    lines = []
    for name in sorted(run.outputs):
        value = MASK if name in run.secret_outputs else _short(run.outputs[name])
        lines.append(f"  {name}: {value}")
    return "\n".join(lines)


# ---------------------------------------------------------------- running


def plan_run(
    config: PlanConfig,
    *,
    stack: str,
    program: Path | Callable[[], None] = ROOT / "__main__.py",
) -> OfflineRun:
    try:
        return run_offline(config.config, stack=stack, secrets=config.secrets, program=program)
    except OfflineProgramError as error:
        raise PlanError(_one_line(str(error))) from None
    except Exception as error:  # a refusal raised some other way still gets one line
        raise PlanError(_one_line(f"{type(error).__name__}: {error}")) from None


def _one_line(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return lines[0] if lines else "the program stopped without a message"


def policy_violations(run: OfflineRun, stack: str) -> list[str]:
    return [str(v) for v in check_resources(run.resources, stack=stack)]


def write_diagram(run: OfflineRun, setup: str, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{setup}.mmd"
    path.write_text(diagram.render_mermaid(run, setup))
    return path


def diagrams_block(diagrams: Mapping[str, str]) -> str:
    """The markdown between the markers: one mermaid fence per setup."""
    parts = [
        f"<!-- generated by `{REFRESH_COMMAND}`; edit tools/diagram.py, not this block -->",
    ]
    for setup in SETUPS:
        parts.append(f"### {diagram.SETUP_TITLES[setup]}\n\n```mermaid\n{diagrams[setup]}```")
    return "\n\n".join(parts)


def update_markdown(path: Path, diagrams: Mapping[str, str]) -> None:
    """Rewrite the diagram block of a markdown file (docs/architecture.md), nothing else."""
    text = path.read_text()
    start, end = text.find(DIAGRAMS_START), text.find(DIAGRAMS_END)
    if start < 0 or end < start:
        raise PlanError(f"{path}: the markers {DIAGRAMS_START} ... {DIAGRAMS_END} are missing")
    head = text[: start + len(DIAGRAMS_START)]
    path.write_text(f"{head}\n{diagrams_block(diagrams)}\n{text[end:]}")


def all_setup_diagrams(
    base: PlanConfig,
    *,
    stack: str,
    program: Path | Callable[[], None] = ROOT / "__main__.py",
) -> dict[str, tuple[OfflineRun, str]]:
    """Each setup run from the stack's config with `setup` (and counts) overridden."""
    out: dict[str, tuple[OfflineRun, str]] = {}
    for setup in SETUPS:
        config = PlanConfig(_setup_config(base.config, setup), base.secrets, base.notes)
        run = plan_run(config, stack=stack, program=program)
        out[setup] = (run, diagram.render_mermaid(run, setup))
    return out


def main(
    argv: Sequence[str] | None = None,
    *,
    root: Path = ROOT,
    program: Path | Callable[[], None] | None = None,
) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.plan",
        description="Offline plan of a stack: resource tree, policy check, Mermaid diagram.",
    )
    parser.add_argument("--stack", default="dev", help="reads Pulumi.<stack>.yaml (default dev)")
    parser.add_argument("--diagram-dir", type=Path, help="write <setup>.mmd diagrams here")
    parser.add_argument(
        "--all-setups",
        action="store_true",
        help="plan pair, full and tessera from the stack's config (setup overridden)",
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        help="with --all-setups: rewrite the diagram block of this file (docs/architecture.md)",
    )
    args = parser.parse_args(argv)
    program = program if program is not None else root / "__main__.py"
    out = sys.stdout
    try:
        if args.markdown and not args.all_setups:
            raise PlanError("--markdown needs --all-setups (the block shows every setup)")
        try:
            raw = load_stack_config(args.stack, root)
        except (FileNotFoundError, ValueError) as error:
            raise PlanError(str(error)) from None
        config = plan_config(raw, f"Pulumi.{args.stack}.yaml")
        for note in config.notes:
            print(f"note: {note}", file=out)
        if args.all_setups:
            return _plan_all(config, args, program, out)
        run = plan_run(config, stack=args.stack, program=program)
    except PlanError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    setup = str(raw.get(f"{NAMESPACE}:setup", "pair"))
    print(
        f"Plan of stack {args.stack!r} (setup {setup}), offline under mocks: "
        f"{len(run.resources)} resources",
        file=out,
    )
    print(render_tree(run), file=out)
    print("Outputs:", file=out)
    print(render_outputs(run), file=out)
    if args.diagram_dir:
        path = write_diagram(run, setup, args.diagram_dir)
        print(f"wrote {path}", file=out)
    return _report_policy(run, args.stack, out)


def _plan_all(
    config: PlanConfig, args: argparse.Namespace, program: Path | Callable[[], None], out: Any
) -> int:
    results = all_setup_diagrams(config, stack=args.stack, program=program)
    status = 0
    for setup, (run, text) in results.items():
        print(f"setup {setup}: {len(run.resources)} resources", file=out)
        if args.diagram_dir:
            args.diagram_dir.mkdir(parents=True, exist_ok=True)
            path = args.diagram_dir / f"{setup}.mmd"
            path.write_text(text)
            print(f"wrote {path}", file=out)
        status = max(status, _report_policy(run, args.stack, out))
    if args.markdown:
        update_markdown(args.markdown, {setup: text for setup, (_, text) in results.items()})
        print(f"updated {args.markdown}", file=out)
    return status


def _report_policy(run: OfflineRun, stack: str, out: Any) -> int:
    violations = policy_violations(run, stack)
    print(f"Policy pack: {len(violations)} violation(s)", file=out)
    for violation in violations:
        print(f"  {violation}", file=out)
    # What AWS would refuse at `pulumi up` though the mocks accept it (tools/aws_rules.py).
    refused = aws_rules.violations(run)
    print(f"AWS rules: {len(refused)} violation(s)", file=out)
    for violation in refused:
        print(f"  {violation}", file=out)
    return 1 if violations or refused else 0


if __name__ == "__main__":
    sys.exit(main())
