"""Run the pack's rules over declared resources without the engine (tests and `tools.plan`).

The rules receive what the engine would hand them: inputs wrapped in the SDK's unknown-checking
proxy, the per-policy config, and for stack rules every resource with its inputs and outputs.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.policy import _NotApplicableError
from pulumi_policy.proxy import unknown_checking_proxy

from policy.rules import all_policies


class Declared(Protocol):
    """What the harness needs of a declared resource (tools.offline.DeclaredResource fits)."""

    @property
    def urn(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def parent_urn(self) -> str: ...
    @property
    def inputs(self) -> dict[str, Any]: ...
    @property
    def state(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Violation:
    policy: str
    urn: str
    message: str

    def __str__(self) -> str:
        return f"[{self.policy}] {self.message}"


def _options(parent: str | None = None) -> PolicyResourceOptions:
    return PolicyResourceOptions(
        protect=False,
        ignore_changes=[],
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
        parent=parent,
    )


def validation_args(
    resource_type: str,
    props: Mapping[str, Any],
    *,
    name: str = "resource",
    urn: str | None = None,
    config: Mapping[str, Any] | None = None,
    parent: str | None = None,
) -> ResourceValidationArgs:
    """The argument bag a resource rule gets from the engine, built from plain inputs."""
    return ResourceValidationArgs(
        resource_type,
        unknown_checking_proxy(dict(props)),
        urn or f"urn:pulumi:test::quorum-ha::{resource_type}::{name}",
        name,
        _options(parent),
        None,
        dict(config or {}),
    )


def _run(result: Any) -> None:
    if inspect.isawaitable(result):
        asyncio.run(_await(result))


async def _await(result: Any) -> None:
    await result


def _policy_config(
    policy: ResourceValidationPolicy | StackValidationPolicy,
    config: Mapping[str, Mapping[str, Any]],
    stack: str,
) -> dict[str, Any]:
    merged = dict(config.get(policy.name, {}))
    schema = policy.config_schema
    # Outside the engine there is no current stack: hand it to the rules that ask for one.
    if schema is not None and "stack" in schema.properties:
        merged.setdefault("stack", stack)
    return merged


def _reporter(violations: list[Violation], policy: str, default_urn: str) -> ReportViolation:
    def report(message: str, urn: str | None = None) -> None:
        # Resource rules always blame the resource under validation, as the engine does.
        violations.append(Violation(policy, default_urn or urn or "", message))

    return report


def check_resources(
    resources: Iterable[Declared],
    *,
    stack: str,
    config: Mapping[str, Mapping[str, Any]] | None = None,
    policies: Iterable[ResourceValidationPolicy | StackValidationPolicy] | None = None,
) -> list[Violation]:
    """Every rule over every resource (and the stack rules over all of them): the violations."""
    config = config or {}
    declared = list(resources)
    violations: list[Violation] = []
    for policy in all_policies() if policies is None else policies:
        policy_config = _policy_config(policy, config, stack)
        if isinstance(policy, ResourceValidationPolicy):
            for resource in declared:
                args = validation_args(
                    resource.type,
                    resource.inputs,
                    name=resource.name,
                    urn=resource.urn,
                    config=policy_config,
                    parent=resource.parent_urn or None,
                )
                try:
                    _run(policy.validate(args, _reporter(violations, policy.name, resource.urn)))
                except _NotApplicableError:
                    continue
        else:
            stack_resources = [
                PolicyResource(
                    r.type,
                    unknown_checking_proxy({**r.inputs, **r.state}),
                    r.urn,
                    r.name,
                    _options(r.parent_urn or None),
                    None,
                    None,
                    [],
                    {},
                )
                for r in declared
            ]
            stack_args = StackValidationArgs(stack_resources, policy_config)
            try:
                _run(policy.validate(stack_args, _reporter(violations, policy.name, "")))
            except _NotApplicableError:
                continue
    return violations
