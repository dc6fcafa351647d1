"""Config -> Settings: the root (keys, region, stack names, stack-wide defaults)."""

from __future__ import annotations

import base64
import hashlib
import json
import re

import pulumi
import pytest
from eth_keyfile import create_keyfile_json
from nacl.public import PrivateKey
from settings_support import settings

from components.settings import ConfigError, load_settings
from components.settings.network import NewNetwork
from domain.naming import stack_label
from tools.offline import OfflineProgramError, load_stack_config, run_offline


def test_defaults_build_the_smallest_pair_setup() -> None:
    s = settings()
    assert (s.setup, s.nodes.quorum_count, s.nodes.tessera_count) == ("pair", 2, 2)
    assert s.network == NewNetwork(cidr="10.0.0.0/16", az_count=2)
    assert (s.nodes.quorum_version, s.nodes.tessera_version) == ("24.4.1", "24.4")
    assert (
        s.ingress.allowed_cidrs == ()
        and s.proxy.internal_nlb
        and not s.ingress.allow_internet_ingress
    )
    assert s.quorum_network.network_id == 10 and s.database.replica_region is None
    assert s.database.backup_retention_days == 7 and s.proxy.task_count == 2


@pytest.mark.parametrize(
    ("stack", "protected"),
    [
        ("dev", False),
        ("dev-alice", False),
        ("e2e-1a2b3c4d", False),
        ("prod", True),
        ("qa", True),
        ("develop", True),
    ],
)
def test_deletion_protection_is_on_outside_non_production_stacks(
    stack: str, protected: bool
) -> None:
    assert settings(stack=stack).deletion_protection is protected
    assert settings(stack=stack, deletionProtection=not protected).deletion_protection is (
        not protected
    )


@pytest.mark.parametrize(
    ("stack", "protect", "days"),
    [
        ("dev", None, 0),
        ("dev-alice", None, 0),
        ("e2e-1a2b3c4d", None, 0),
        ("dev", True, 0),  # protection asked for, but the name must be reusable at once
        ("prod", None, 30),
        ("prod", False, 30),  # unprotected production still keeps its secrets recoverable
        ("qa", None, 30),
    ],
)
def test_secrets_recovery_window_follows_the_non_production_rule(
    stack: str, protect: bool | None, days: int
) -> None:
    values = {} if protect is None else {"deletionProtection": protect}
    assert settings(stack=stack, **values).secret_recovery_days == days


def test_missing_region_is_refused() -> None:
    with pytest.raises(
        ConfigError, match=r"aws:region: null is not valid; allowed: an AWS region"
    ):
        settings(region=None)


@pytest.mark.parametrize(
    ("key", "region"),
    [
        ("region", "cn-north-1"),
        ("region", "us-iso-east-1"),
        ("region", "useast1"),
        ("replicaRegion", "cn-northwest-1"),
    ],
)
def test_regions_outside_the_aws_partition_are_refused(key: str, region: str) -> None:
    name = "aws:region" if key == "region" else f"quorum-ha:{key}"
    with pytest.raises(ConfigError, match=rf"{name}: '{region}' is not valid; allowed: .*cn-"):
        settings(**{key: region})


def test_gov_cloud_regions_are_accepted() -> None:
    assert settings(region="us-gov-west-1").region == "us-gov-west-1"


def test_unknown_keys_are_refused_as_typos() -> None:
    with pytest.raises(ConfigError, match=r"quorum-ha:tesseraNode: '2' is not valid.*typo"):
        settings(tesseraNode=2)


@pytest.mark.parametrize(
    ("stack", "prefix"),
    [
        ("dev", "qha-dev"),
        ("dev-alice", "qha-dev-alice"),
        ("prod", "qha-prod"),
        # Altered labels carry 6 hex of sha256(stack name) so distinct stacks stay distinct.
        ("Prod_EU.1", "qha-prod-eu-1-" + hashlib.sha256(b"Prod_EU.1").hexdigest()[:6]),
        ("a--b", "qha-a-b-" + hashlib.sha256(b"a--b").hexdigest()[:6]),
        ("x" * 90, "qha-" + "x" * 30 + "-" + hashlib.sha256(b"x" * 90).hexdigest()[:6]),
    ],
)
def test_name_prefix_is_a_valid_rds_identifier_start(stack: str, prefix: str) -> None:
    assert settings(stack=stack).name_prefix == prefix


# RDS DB instance identifier: 1-63 letters, digits or hyphens, a letter first, no two
# consecutive hyphens, no hyphen last (CreateDBInstance DBInstanceIdentifier).
_RDS_IDENTIFIER = re.compile(r"^[a-z](?!.*--)[a-z0-9-]{0,62}(?<!-)$")


COLLIDING_STACKS = (
    ("dev-alice-feature-branch-number-one-xyz", "dev-alice-feature-branch-number-one-abc"),
    ("Dev", "dev"),
    ("prod_eu", "prod-eu"),
    ("prod.eu", "prod_eu"),
    ("x" * 31, "x" * 32),
    ("a--b", "a-b"),
)


@pytest.mark.parametrize(("first", "second"), COLLIDING_STACKS)
def test_stacks_whose_labels_collide_get_distinct_name_prefixes(first: str, second: str) -> None:
    # Equal prefixes would make the second stack fail on DBInstanceAlreadyExists, the ECR
    # repository name and the KMS alias.
    assert settings(stack=first).name_prefix != settings(stack=second).name_prefix


@pytest.mark.parametrize("stack", [s for pair in COLLIDING_STACKS for s in pair] + ["Z" * 90])
def test_every_name_derived_from_the_prefix_fits_its_aws_limit(stack: str) -> None:
    prefix = settings(stack=stack).name_prefix
    # The longest RDS identifier: the replica's (tessera_database.py).
    assert _RDS_IDENTIFIER.match(f"{prefix}-tessera-replica"), prefix
    assert len(f"{prefix}-tessera-final") <= 255  # final DB snapshot identifier
    assert len(f"alias/{prefix}") <= 256  # KMS alias
    assert len(f"{prefix}/quorum-proxy") <= 256  # ECR repository name
    assert len(f"{prefix}-proxy") <= 255  # ECS task definition family


@pytest.mark.parametrize("stack", [s for pair in COLLIDING_STACKS for s in pair] + ["Z" * 90])
def test_the_stack_label_is_one_dns_label(stack: str) -> None:
    # For the private zone name and IAM role paths too (components/setups.py).
    assert re.match(r"^[a-z0-9](?!.*--)[a-z0-9-]{0,36}(?<!-)$", stack_label(stack)), stack


def test_template_defaults_are_values_the_program_accepts() -> None:
    import yaml

    from tools.offline import ROOT

    template = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["template"]["config"]
    for key, entry in template.items():
        if not key.startswith("quorum-ha:") or "default" not in entry:
            continue
        name = key.split(":", 1)[1]
        settings(**{name: str(entry["default"])})  # the prompt stores the text as is


def test_secret_config_is_read_as_secrets() -> None:
    # Read with Config.get_secret, the values stay Pulumi secrets from the config on: exported
    # as they are, the engine receives them as secret outputs.
    private = PrivateKey.generate()
    keystore = json.dumps(create_keyfile_json(b"\x01" * 32, b"kept", iterations=2))
    secrets = {
        "quorum-ha:tesseraPrivateKey": base64.b64encode(bytes(private)).decode(),
        "quorum-ha:quorumAccountKeystore": keystore,
        "quorum-ha:quorumAccountPassword": "kept",
    }
    config = load_stack_config("dev")
    config["quorum-ha:tesseraPublicKey"] = base64.b64encode(bytes(private.public_key)).decode()

    def program() -> None:
        keys = load_settings().keys
        pulumi.export("private", keys.tessera_private_key)
        pulumi.export("keystore", keys.quorum_account_keystore)
        pulumi.export("password", keys.quorum_account_password)
        pulumi.export("public", keys.tessera_public_key)

    run = run_offline(config, secrets=secrets, program=program)
    assert run.secret_outputs == {"private", "keystore", "password"}
    assert run.outputs["private"] == secrets["quorum-ha:tesseraPrivateKey"]


def test_a_secret_set_under_a_mistyped_key_is_refused_without_echo() -> None:
    # `pulumi config set --secret quorum-ha:tesseraPrivateKy ...`: refused as a typo, and the
    # value stays hidden like any secret's.
    value = "bm90LWEta2V5LWJ1dC1sb25nLWVub3VnaC10by1zaG93"
    with pytest.raises(OfflineProgramError) as refused:
        run_offline(load_stack_config("dev"), secrets={"quorum-ha:tesseraPrivateKy": value})
    assert "quorum-ha:tesseraPrivateKy: [secret] is not valid" in str(refused.value)
    assert value not in str(refused.value)
