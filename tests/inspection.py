"""Looking inside an offline run, for tests only: user data unpacked, IAM policies, where secrets
and clear texts appear, and which old resource the engine would match each new one to."""

from __future__ import annotations

import base64
import gzip
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import yaml

from tools.offline import DeclaredResource, OfflineRun, real_urn, urn_parts, walk


def unpack_user_data(value: str) -> str:
    """The user data text cloud-init reads: plain as given, or base64 of gzip (EC2's
    userDataBase64, packed by node_bootstrap.pack_user_data) unpacked."""
    if value.startswith(("#", "Content-Type:")):
        return value
    raw = base64.b64decode(value, validate=True)
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw.decode()


def instance_user_data(inputs: Mapping[str, Any]) -> str | None:
    """The plain user data of a declared instance's inputs (userData or userDataBase64)."""
    for key in ("userData", "userDataBase64"):
        value = inputs.get(key)
        if isinstance(value, str) and value:
            return unpack_user_data(value)
    return None


def cloud_config_files(user_data: str) -> dict[str, str]:
    """Path -> text of every file a `#cloud-config` user data writes (gz+b64/b64 unpacked);
    the user data itself may be packed (base64 of gzip)."""
    document = yaml.safe_load(unpack_user_data(user_data)) or {}
    files: dict[str, str] = {}
    for entry in document.get("write_files") or []:
        content = entry.get("content", "")
        encoding = entry.get("encoding", "")
        if encoding in ("gz+b64", "gzip+base64", "gz+base64"):
            content = gzip.decompress(base64.b64decode(content)).decode()
        elif encoding in ("b64", "base64"):
            content = base64.b64decode(content).decode()
        files[entry["path"]] = content
    return files


def policy_documents(run: OfflineRun) -> list[tuple[DeclaredResource, dict[str, Any]]]:
    """Every IAM policy the program declared (inline, managed, key and trust policies)."""
    fields = {
        "aws:iam/rolePolicy:RolePolicy": "policy",
        "aws:iam/policy:Policy": "policy",
        "aws:iam/role:Role": "assumeRolePolicy",
        "aws:kms/key:Key": "policy",
        "aws:kms/replicaKey:ReplicaKey": "policy",
    }
    found = []
    for resource in run.resources:
        text = resource.inputs.get(fields.get(resource.type, ""), None)
        if isinstance(text, str) and text:
            found.append((resource, json.loads(text)))
    return found


def _is_under(path: str, roots: frozenset[str]) -> bool:
    return any(path == r or path.startswith((f"{r}.", f"{r}[")) for r in roots)


_SECRET_FIELD = re.compile(r"(password|token|secret|private|ciphertext)", re.IGNORECASE)


def _texts(value: Any) -> Iterator[str]:
    """A secret's text, and the secret-named strings inside it when it is a JSON document
    (the password beside a keystore, not the keystore's cipher name)."""
    if not isinstance(value, str):
        return
    yield value
    try:
        parsed = json.loads(value)
    except ValueError:
        return
    if isinstance(parsed, dict | list):
        for path, leaf in walk(parsed):
            if isinstance(leaf, str) and _SECRET_FIELD.search(re.split(r"[.\[]", path)[-1]):
                yield leaf


def secret_texts(run: OfflineRun, *, min_length: int = 8) -> set[str]:
    """Every secret string the run declared: secret inputs (and the strings inside them) and
    the secret results of random resources. Short strings are left out: they match by chance.

    When the engine marks a whole structure secret (a list of registry logins, say), only the
    fields named like secrets count: the registry's address beside its password is not one.
    """
    found: set[str] = set()
    for resource in run.resources:
        for path, leaf in walk(resource.inputs):
            if path in resource.secret_paths:
                found.update(_texts(leaf))
            elif _is_under(path, resource.secret_paths):
                field_name = re.split(r"[.\[]", path)[-1]
                if _SECRET_FIELD.search(field_name):
                    found.update(_texts(leaf))
        if resource.type.startswith("random:"):
            for name in ("result", "base64", "hex"):
                found.update(_texts(resource.state.get(name)))
    return {text for text in found if len(text) >= min_length}


def public_texts(run: OfflineRun) -> Iterator[tuple[str, str]]:
    """(where, text) of everything the run shows in clear: non-secret inputs, the files in
    user data, and non-secret outputs."""
    for resource in run.resources:
        for path, leaf in walk(resource.inputs):
            if isinstance(leaf, str) and not _is_under(path, resource.secret_paths):
                yield f"{resource.name}.{path}", leaf
        user_data = instance_user_data(resource.inputs)
        if user_data is not None and user_data.startswith("#cloud-config"):
            yield f"{resource.name} user data", user_data
            for file_path, text in cloud_config_files(user_data).items():
                yield f"{resource.name} user data {file_path}", text
    for name, value in run.outputs.items():
        if name not in run.secret_outputs:
            yield f"output {name}", json.dumps(value)


# ---------------------------------------------------------------- the engine's alias matching


def _collapse_alias(
    alias: Mapping[str, Any], resource: DeclaredResource, mock_to_real: Mapping[str, str]
) -> str:
    """An alias spec as the URN it stands for (engine: stepGenerator.collapseAliasToUrn)."""
    if "urn" in alias:
        return str(alias["urn"])
    if alias.get("noParent"):
        parent = ""
    elif alias.get("parentUrn"):
        parent = mock_to_real.get(alias["parentUrn"], alias["parentUrn"])
    else:
        parent = mock_to_real.get(resource.parent_urn, "")
    stack, project, _, _ = urn_parts(resource.real_urn)
    return real_urn(
        parent,
        alias.get("type") or resource.type,
        alias.get("name") or resource.name,
        alias.get("stack") or stack,
        alias.get("project") or project,
    )


def _inherited_alias(child_type: str, child_name: str, parent_name: str, parent_alias: str) -> str:
    """engine: stepGenerator.inheritedChildAlias. A child named after its parent takes the
    aliased parent's name in its own name too."""
    stack, project, parent_type, alias_name = urn_parts(parent_alias)
    if child_name.startswith(parent_name):
        child_name = alias_name + child_name[len(parent_name) :]
    return f"urn:pulumi:{stack}::{project}::{parent_type}${child_type}::{child_name}"


def previous_urns(before: OfflineRun, after: OfflineRun) -> dict[str, str | None]:
    """For each resource of `after` (by real URN), the real URN of the `before` resource the
    engine would take it to be, or None when it would create it anew.

    As pulumi/pulumi pkg/resource/deploy/step_generator.go does it: the resource's own URN
    first, then its aliases (own aliases; the alias its parent was matched by, inherited; and
    each own alias under that one), the first present in the old state winning; a parent matched
    through an alias passes only that alias on to its children.
    """
    olds = {r.real_urn for r in before.resources}
    mock_to_real = {r.urn: r.real_urn for r in after.resources}
    matched_alias: dict[str, str] = {}  # after real URN -> the old URN it was matched by
    result: dict[str, str | None] = {}
    for resource in after.resources:  # registration order: parents come first
        own = resource.real_urn
        candidates = [_collapse_alias(a, resource, mock_to_real) for a in resource.aliases]
        parent_real = mock_to_real.get(resource.parent_urn, "")
        parent_alias = matched_alias.get(parent_real)
        if parent_alias is not None:
            parent_name = urn_parts(parent_real)[3]
            inherited = [_inherited_alias(resource.type, resource.name, parent_name, parent_alias)]
            for alias in list(candidates):
                _, _, qualified, name = urn_parts(alias)
                inherited.append(
                    _inherited_alias(qualified.split("$")[-1], name, parent_name, parent_alias)
                )
            candidates += inherited
        if own in olds:
            result[own] = own
            continue
        found = next((c for c in candidates if c in olds), None)
        if found is not None:
            matched_alias[own] = found
        result[own] = found
    return result
