"""The mock engine: run the Pulumi program fully offline under Pulumi's mock runtime and record
what it declares, as the real engine would receive it (URNs, aliases, dependencies, secrets).

Used by the tests and by `tools.plan`. What AWS answers lives in `tools.fake_aws`; helpers that
only tests use to look inside a run live in tests/inspection.py. Each run gets a fresh event
loop and a fresh context, so runs do not leak the root stack, config or outstanding RPCs into
each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import json
import runpy
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.config import set_all_config
from pulumi.runtime.sync_await import _sync_await

from domain.naming import PROJECT
from tools import fake_aws

ROOT = Path(__file__).resolve().parent.parent
MASK = "[secret]"


@dataclass(frozen=True)
class DeclaredResource:
    """One resource the program registered, as the engine would have received it."""

    urn: str
    type: str
    name: str
    parent_urn: str
    custom: bool
    inputs: dict[str, Any]  # secrets appear unwrapped here; see `secret_paths`
    secret_paths: frozenset[str]
    state: dict[str, Any]
    provider: str = ""  # "<provider urn>::<id>" when one was given explicitly or inherited
    protect: bool = False
    retain_on_delete: bool = False
    ignore_changes: tuple[str, ...] = ()
    id: str = ""  # the provider-assigned id (mocked), as `resource.id` resolves
    # The URN the real engine gives it: the mock monitor keeps only the parent's last type, the
    # engine the whole chain of parent types (see `real_urn`).
    real_urn: str = ""
    # The aliases the SDK sent, as alias specs (name/type/stack/project/parentUrn/noParent,
    # parentUrn being a mock URN) or {"urn": ...}; the engine, not the SDK, adds inherited ones.
    aliases: tuple[dict[str, Any], ...] = ()
    # Mock URNs of what it waits for: depends_on and every resource whose outputs it takes.
    dependencies: tuple[str, ...] = ()

    @property
    def masked_inputs(self) -> dict[str, Any]:
        return _mask(self.inputs, self.secret_paths, "")


@dataclass
class OfflineRun:
    """What one offline run of the program declared and exported."""

    resources: list[DeclaredResource]
    outputs: dict[str, Any]
    secret_outputs: frozenset[str]
    invokes: list[str] = field(default_factory=list)

    def of_type(self, type_: str) -> list[DeclaredResource]:
        return [r for r in self.resources if r.type == type_]

    def named(self, name: str) -> DeclaredResource:
        found = [r for r in self.resources if r.name == name]
        if len(found) != 1:
            raise KeyError(f"{len(found)} resources are named {name!r}")
        return found[0]

    def children_of(self, parent: DeclaredResource) -> list[DeclaredResource]:
        return [r for r in self.resources if r.parent_urn == parent.urn]


class OfflineProgramError(Exception):
    """The program stopped (bad config, or a bug); the message is what the operator would see."""


def _mask(value: Any, secret_paths: frozenset[str], path: str) -> Any:
    if path in secret_paths:
        return MASK
    if isinstance(value, dict):
        return {k: _mask(v, secret_paths, f"{path}.{k}" if path else k) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, secret_paths, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _unwrap(value: Any, path: str, secrets: set[str]) -> Any:
    """Strip the RPC secret wrappers, remembering where they were."""
    if rpc.is_rpc_secret(value):
        secrets.add(path)
        return _unwrap(rpc.unwrap_rpc_secret(value), path, secrets)
    if isinstance(value, dict):
        return {
            k: _unwrap(v, f"{path}.{k}" if path else k, secrets)
            for k, v in value.items()
            if k != rpc._special_sig_key
        }
    if isinstance(value, list):
        return [_unwrap(v, f"{path}[{i}]", secrets) for i, v in enumerate(value)]
    return value


class _Mocks(pulumi.runtime.Mocks):
    def __init__(self, region: str, stack_outputs: Mapping[str, Mapping[str, Any]]) -> None:
        self.region = region
        self.stack_outputs = stack_outputs
        self.invokes: list[str] = []

    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str | None, dict]:
        if args.typ == "pulumi:pulumi:StackReference":
            ref = str(args.inputs.get("name", args.name))
            if ref not in self.stack_outputs:
                raise OfflineProgramError(f"no outputs given for stack reference {ref!r}")
            outputs = dict(self.stack_outputs[ref])
            return ref, {**args.inputs, "name": ref, "outputs": outputs, "secretOutputNames": []}
        state = fake_aws.resource_state(args.typ, args.name, args.inputs, self.region)
        resource_id = state.pop("id")
        return resource_id, {**args.inputs, **state}

    def call(self, args: pulumi_mocks.MockCallArgs) -> dict:  # type: ignore[override]
        self.invokes.append(args.token)
        return fake_aws.invoke_result(args.token, args.args, self.region)


ROOT_STACK_TYPE = "pulumi:pulumi:Stack"


def urn_parts(urn: str) -> tuple[str, str, str, str]:
    """(stack, project, qualified type, name) of a URN."""
    stack, project, qualified, name = urn.removeprefix("urn:pulumi:").split("::", 3)
    return stack, project, qualified, name


def real_urn(parent_urn: str, type_: str, name: str, stack: str = "", project: str = "") -> str:
    """The URN the engine gives a resource: its parent's whole type chain, `$`, its own type
    (pulumi/pulumi sdk/go/common/resource/urn.go NewURN; a child of the root stack has only its
    own type). Stack and project default to those of `parent_urn`, else the running program's."""
    qualified = type_
    if parent_urn:
        parent_stack, parent_project, parent_type, _ = urn_parts(parent_urn)
        stack, project = stack or parent_stack, project or parent_project
        if parent_type != ROOT_STACK_TYPE:
            qualified = f"{parent_type}${type_}"
    stack = stack or pulumi.get_stack()
    project = project or pulumi.get_project()
    return f"urn:pulumi:{stack}::{project}::{qualified}::{name}"


def _alias(alias: Any) -> dict[str, Any]:
    """One alias of a register request, as plain data."""
    if alias.WhichOneof("alias") == "urn":
        return {"urn": alias.urn}
    spec = alias.spec
    return {
        "name": spec.name,
        "type": spec.type,
        "stack": spec.stack,
        "project": spec.project,
        "parentUrn": spec.parentUrn,
        "noParent": spec.noParent,
    }


class _RecordingMonitor(pulumi_mocks.MockMonitor):
    def __init__(self, mocks: _Mocks) -> None:
        super().__init__(mocks)
        self.declared: list[DeclaredResource] = []
        self.real_urns: dict[str, str] = {}  # mock URN -> the real engine's URN

    def _real_urn(self, mock_urn: str, parent: str, type_: str, name: str) -> str:
        real = real_urn(self.real_urns.get(parent, ""), type_, name)
        self.real_urns[mock_urn] = real
        return real

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - gRPC method name
        response = super().RegisterResource(request)
        if request.type == "pulumi:pulumi:Stack":
            self.real_urns[response.urn] = response.urn
            return response
        self._record(
            request,
            self.make_urn(request.parent, request.type, request.name),
            request.object,
            custom=bool(request.custom),
            protect=bool(request.protect),
            retain_on_delete=bool(request.retainOnDelete),
            ignore_changes=tuple(request.ignoreChanges),
            id=str(response.id or ""),
            aliases=tuple(_alias(a) for a in request.aliases),
            dependencies=tuple(request.dependencies),
        )
        return response

    def ReadResource(self, request: Any) -> Any:  # noqa: N802 - gRPC method name
        """Reads (StackReferences, `get`s) are declarations too: record them."""
        response = super().ReadResource(request)
        self._record(
            request, response.urn, request.properties, custom=True, id=str(request.id or "")
        )
        return response

    def _record(self, request: Any, urn: str, properties: Any, **options: Any) -> None:
        """Keep what a registration or a read declared (`options`: what only one of them has)."""
        secrets: set[str] = set()
        inputs = _unwrap(rpc.deserialize_properties(properties), "", secrets)
        self.declared.append(
            DeclaredResource(
                urn=urn,
                type=request.type,
                name=request.name,
                parent_urn=request.parent,
                inputs=inputs,
                secret_paths=frozenset(secrets),
                state=_unwrap(self.resources[urn].state, "", set()),
                provider=request.provider,
                real_urn=self._real_urn(urn, request.parent, request.type, request.name),
                **options,
            )
        )


def load_stack_config(stack: str, root: Path = ROOT) -> dict[str, Any]:
    """The `config:` block of Pulumi.<stack>.yaml, keys as written (`quorum-ha:setup`)."""
    path = root / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no stack file {path.name} in {root}")
    data = yaml.safe_load(path.read_text()) or {}
    config = data.get("config") or {}
    if not isinstance(config, dict):
        raise ValueError(f"{path.name}: 'config' must be a mapping")
    return config


def _engine_config(config: Mapping[str, Any]) -> dict[str, str]:
    """Pulumi hands structured values to the program as JSON text."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            raise OfflineProgramError(
                f"config {key!r} is encrypted in the stack file; pass its value in secrets="
            )
        out[key] = value if isinstance(value, str) else json.dumps(value)
    return out


def _resolve(value: Any) -> tuple[Any, bool]:
    output = pulumi.Output.from_input(value)
    resolved = _sync_await(output.future(with_unknowns=True))
    secret = bool(_sync_await(output.is_secret()))
    return resolved, secret


def run_offline(
    config: Mapping[str, Any],
    *,
    stack: str = "dev",
    secrets: Mapping[str, Any] | None = None,
    stack_outputs: Mapping[str, Mapping[str, Any]] | None = None,
    program: Path | Callable[[], None] = ROOT / "__main__.py",
    region: str | None = None,
) -> OfflineRun:
    """Run the program (a path to run, or a callable) under mocks and return what it declared.

    `config` keys are full (`quorum-ha:setup`); `secrets` are extra config values marked secret;
    `stack_outputs` answers StackReferences by stack name.
    """
    context = contextvars.copy_context()
    return context.run(
        _run_in_context, config, stack, secrets or {}, stack_outputs or {}, program, region
    )


def _run_in_context(
    config: Mapping[str, Any],
    stack: str,
    secrets: Mapping[str, Any],
    stack_outputs: Mapping[str, Mapping[str, Any]],
    program: Path | Callable[[], None],
    region: str | None,
) -> OfflineRun:
    all_config = {**config, **secrets}
    region = region or str(all_config.get("aws:region", "us-east-1"))
    all_config.setdefault("aws:region", region)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        pulumi_settings.ROOT.set(None)
        set_all_config(_engine_config(all_config), list(secrets))
        mocks = _Mocks(region, stack_outputs)
        monitor = _RecordingMonitor(mocks)
        pulumi.runtime.set_mocks(
            mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor
        )
        root = pulumi_settings.get_root_resource()
        try:
            if callable(program):
                program()
            else:
                with _program_on_path(program.parent):
                    runpy.run_path(str(program), run_name="__main__")
            _sync_await(pulumi.runtime.stack.wait_for_rpcs())
        except pulumi.RunError as error:
            # Let the RPCs already queued finish so the loop closes clean.
            with contextlib.suppress(Exception):
                _sync_await(pulumi.runtime.stack.wait_for_rpcs())
            raise OfflineProgramError(str(error)) from error
        except Exception:
            # A failure inside a mock or an apply: drain as well, or the next run inherits
            # tasks bound to this run's closed loop.
            with contextlib.suppress(Exception):
                _sync_await(pulumi.runtime.stack.wait_for_rpcs())
            raise
        outputs: dict[str, Any] = {}
        secret_outputs: set[str] = set()
        for name, value in getattr(root, "outputs", {}).items():
            resolved, is_secret = _resolve(value)
            outputs[name] = _unwrap(resolved, name, secret_outputs)
            if is_secret:
                secret_outputs.add(name)
        return OfflineRun(
            resources=list(monitor.declared),
            outputs=outputs,
            secret_outputs=frozenset(secret_outputs),
            invokes=list(mocks.invokes),
        )
    finally:
        _discard_pending(loop)
        asyncio.set_event_loop(None)
        loop.close()
        if sys.exc_info()[0] is not None:
            # A failed apply leaves Output futures holding its exception in reference cycles.
            # Collect them now: collected later, inside some ast.parse, their finalizers trip
            # CPython 3.11's "AST constructor recursion depth mismatch" (gh-106905).
            gc.collect()


def _discard_pending(loop: asyncio.AbstractEventLoop) -> None:
    """Pulumi's RPC manager and output list are process-wide: a failed run must not hand its
    half-finished tasks (bound to a loop about to close) to the next run."""
    settings = pulumi_settings.SETTINGS
    settings.rpc_manager.clear()
    with settings.lock:
        settings.outputs.clear()
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))


class _program_on_path:  # noqa: N801 - used as a context manager, reads like one
    def __init__(self, directory: Path) -> None:
        self.directory = str(directory)

    def __enter__(self) -> None:
        sys.path.insert(0, self.directory)

    def __exit__(self, *exc: object) -> None:
        sys.path.remove(self.directory)


def walk(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every (path, leaf) in a nested inputs/outputs value, for invariant checks."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from walk(v, f"{path}.{k}" if path else k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from walk(v, f"{path}[{i}]")
    else:
        yield path, value
