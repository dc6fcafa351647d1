"""How quorum-ha names things in AWS and in its config: the one home of each name's rule.

Names that must be unique per account and region carry the stack (its label where AWS wants a
DNS label); `domain/stacks.py` says which stacks are throwaway.
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal

from domain.validation import partition as region_partition

# The Pulumi project, the namespace of its config keys (`quorum-ha:setup`) and of its names.
PROJECT = "quorum-ha"
# Prefix of the physical names AWS keeps per account and region (database, alias, alarms).
NAME_PREFIX = "qha-"
# The private DNS zone's parent domain: <stack label>.quorum-ha.internal.
ZONE_SUFFIX = f"{PROJECT}.internal"


def stack_label(stack: str) -> str:
    """The stack name as one lowercase DNS label / RDS identifier part: letters, digits and
    single hyphens, at most 37 characters.

    When the name had to be altered to fit (lowercased, characters replaced, cut at 30), 6 hex
    of its sha256 follow, so `Dev` and `dev`, or two long names sharing 30 characters, never
    share a name (database identifier, ECR repository, KMS alias).
    """
    label = re.sub(r"[^a-z0-9]+", "-", stack.lower()).strip("-")[:30].rstrip("-")
    if label == stack:
        return label
    digest = hashlib.sha256(stack.encode()).hexdigest()[:6]
    return f"{label or 'stack'}-{digest}"


def stack_name_prefix(stack: str) -> str:
    """Prefix for AWS names unique per account and region, at most 41 characters:
    `<prefix>-tessera-replica` stays within RDS's 63."""
    return f"{NAME_PREFIX}{stack_label(stack)}"


def zone_name(stack: str) -> str:
    """The machines' private DNS zone (distinct per stack, even for names that fold alike)."""
    return f"{stack_label(stack)}.{ZONE_SUFFIX}"


def node_dns_name(role: str, index: int, zone: str) -> str:
    """One machine's name in the private zone, e.g. tessera-1.dev.quorum-ha.internal."""
    return f"{role}-{index}.{zone}"


def log_group_prefix(stack: str) -> str:
    """Every log group of the stack starts with this (the KMS key policy names the prefix)."""
    return f"/{PROJECT}/{stack}/"


def log_group_name(stack: str, what: str) -> str:
    """The log group of one kind of machine (`pair`, `quorum`, `tessera`) or of the `proxy`."""
    return f"{log_group_prefix(stack)}{what}"


def role_path(stack: str, who: Literal["nodes", "proxy"]) -> str:
    """The IAM path of the machines' or the proxy's roles (the KMS key policy names it)."""
    return f"/{PROJECT}/{stack_label(stack)}/{who}/"


def secret_prefix(stack: str) -> str:
    """The Secrets Manager path of the stack's secrets, e.g. quorum-ha/dev."""
    return f"{PROJECT}/{stack}"


def tessera_key_id(prefix: str) -> str:
    """The key id Tessera's AWS vault is given (the names of its two secrets start with it)."""
    return f"{prefix}/tessera"


def tessera_key_secret_names(key_id: str) -> tuple[str, str]:
    """(public, private) secret names, each holding the plain base64 key: <id>Pub and <id>Key.

    Our convention: Tessera's config names both secrets in its keyData, so the stack that
    writes them (components/shared_keys.py) and the config that reads them must agree here."""
    return f"{key_id}Pub", f"{key_id}Key"


# An ECR image: the tasks' execution role and the Quorum machines' roles pull it by IAM.
_ECR_IMAGE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr(-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?P<cn>\.cn)?"
    r"/(?P<repository>[a-z0-9._/-]+?)(:[\w.-]+|@sha256:[0-9a-f]{64})$"
)


def ecr_repository_arn(image_uri: str) -> str:
    """The ARN of the ECR repository an image URI names; ValueError if it is not ECR's."""
    match = _ECR_IMAGE.match(image_uri)
    if match is None:
        raise ValueError(f"not an ECR image URI: {image_uri!r}")
    region = match["region"]
    partition = "aws-cn" if match["cn"] else region_partition(region)
    return f"arn:{partition}:ecr:{region}:{match['account']}:repository/{match['repository']}"
