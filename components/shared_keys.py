"""The client node's shared identity: one KMS customer key and the secrets it protects.

Keys are generated from `random.RandomBytes` seeds kept in Pulumi state, and derived in `apply`
by domain/keys.py, deterministically: `pulumi up` never rolls the keys unless the seeds are
replaced on purpose.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from components.base import Component
from components.settings.keys import ExistingKeys
from domain.database import DB_USERNAME
from domain.keys import account_keystore, keystore_address, node_public_key, tessera_key_pair
from domain.naming import tessera_key_id, tessera_key_secret_names


@dataclass
class SharedKeysArgs:
    name_prefix: str  # unique per account and region, e.g. qha-dev
    secret_prefix: str  # Secrets Manager path, e.g. quorum-ha/dev
    quorum_node_count: int
    # The machines' roles' IAM path, named in the key policy's decrypt statement. That statement
    # limits nothing by itself: the policy's first statement lets the account root (so any IAM
    # policy in the account) use the key without condition. What keeps other principals out is
    # IAM: only the machines' role policies grant kms:Decrypt on this key.
    node_role_path: str
    # Log groups under this prefix may be encrypted with the key.
    log_group_prefix: str
    protect: bool
    # 0 deletes the secrets without recovery (throwaway stacks re-created under the same name);
    # 7 to 30 keeps them recoverable that many days (Secrets Manager DeleteSecret).
    secret_recovery_days: int
    # A replica of the multi-Region key, for a database replica in another region.
    replica_region: str | None = None
    # Keys of an existing node being made HA (secret config); none: the stack generates them.
    existing: ExistingKeys = field(default_factory=ExistingKeys)


class SharedKeys(Component[SharedKeysArgs]):
    """KMS customer key + Secrets Manager secrets for Tessera's key pair, the Quorum account,
    each Quorum node's devp2p key and the database credentials."""

    key_arn: pulumi.Output[str]
    key_id: pulumi.Output[str]
    tessera_key_id: str
    tessera_public_key: pulumi.Output[str]
    tessera_secret_arns: list[pulumi.Output[str]]
    quorum_account_secret_arn: pulumi.Output[str]
    quorum_account_address: pulumi.Output[str]
    node_key_secret_arns: list[pulumi.Output[str]]
    node_public_keys: list[pulumi.Output[str]]
    db_secret_arn: pulumi.Output[str]
    db_username: str
    db_password: pulumi.Output[str]
    replica_key_arn: pulumi.Output[str] | None

    def __init__(
        self, name: str, args: SharedKeysArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("quorum-ha:shared_keys:SharedKeys", name, args, opts)
        self._recovery_days = args.secret_recovery_days
        key, policy = self._create_key()
        self.key_arn = key.arn
        self.replica_key_arn = None
        if args.replica_region:
            self.replica_key_arn = aws.kms.ReplicaKey(
                f"{name}-replica-key",
                primary_key_arn=key.arn,
                description=f"{args.name_prefix}: database replica in {args.replica_region}",
                deletion_window_in_days=30,
                policy=policy,
                region=args.replica_region,
                opts=self._opts(protect=args.protect, retain_on_delete=args.protect),
            ).arn
        self.key_id = key.key_id
        self.tessera_key_id = tessera_key_id(args.secret_prefix)
        self.tessera_public_key = self._create_tessera_keys()
        self._create_quorum_account()
        self._create_node_keys()
        self.db_username = DB_USERNAME
        self.db_password = self._create_db_credentials()
        self.register_outputs(
            {
                "keyArn": self.key_arn,
                "tesseraPublicKey": self.tessera_public_key,
                "tesseraSecretArns": self.tessera_secret_arns,
                "quorumAccountSecretArn": self.quorum_account_secret_arn,
                "quorumAccountAddress": self.quorum_account_address,
                "nodeKeySecretArns": self.node_key_secret_arns,
                "dbSecretArn": self.db_secret_arn,
            }
        )

    def _create_key(self) -> tuple[aws.kms.Key, str]:
        args = self._args
        identity = aws.get_caller_identity(opts=pulumi.InvokeOptions(parent=self))
        region = aws.get_region(opts=pulumi.InvokeOptions(parent=self)).region
        # GovCloud and China regions live in other partitions.
        partition = aws.get_partition(opts=pulumi.InvokeOptions(parent=self)).partition
        account = identity.account_id
        root = f"arn:{partition}:iam::{account}:root"
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    # Without this the key becomes unmanageable; IAM policies then decide who
                    # in the account administers and uses it (the only limit on use).
                    "Sid": "AccountAdministers",
                    "Effect": "Allow",
                    "Principal": {"AWS": root},
                    "Action": "kms:*",
                    "Resource": "*",
                },
                {
                    # Documents the intended use; a subset of AccountAdministers, so it grants
                    # and restricts nothing (an Allow cannot narrow another Allow). Narrowing
                    # AccountAdministers instead would first need the deployer's own use of the
                    # key (it reads secrets back through Secrets Manager) allowed explicitly.
                    "Sid": "MachinesDecryptSecretsThroughSecretsManager",
                    "Effect": "Allow",
                    "Principal": {"AWS": root},
                    "Action": ["kms:Decrypt", "kms:DescribeKey"],
                    "Resource": "*",
                    "Condition": {
                        "ArnLike": {
                            "aws:PrincipalArn": (
                                f"arn:{partition}:iam::{account}:role{args.node_role_path}*"
                            )
                        },
                        "StringEquals": {
                            "kms:ViaService": f"secretsmanager.{region}.amazonaws.com"
                        },
                    },
                },
                {
                    "Sid": "LogsEncryptThisStacksLogGroups",
                    "Effect": "Allow",
                    "Principal": {"Service": f"logs.{region}.amazonaws.com"},
                    "Action": [
                        "kms:Encrypt*",
                        "kms:Decrypt*",
                        "kms:ReEncrypt*",
                        "kms:GenerateDataKey*",
                        "kms:Describe*",
                    ],
                    "Resource": "*",
                    "Condition": {
                        "ArnLike": {
                            "kms:EncryptionContext:aws:logs:arn": (
                                f"arn:{partition}:logs:{region}:{account}:log-group:"
                                f"{args.log_group_prefix}*"
                            )
                        }
                    },
                },
            ],
        }
        key = aws.kms.Key(
            f"{self._name}-key",
            description=f"{args.name_prefix}: Tessera/Quorum keys, database, volumes and logs",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            # Always multi-Region: KMS CreateKey's MultiRegion cannot change after creation, so
            # a key that followed replicaRegion would be replaced (and with it the database,
            # volumes and repository it encrypts) when DR is added later. A multi-Region primary
            # key works in every operation a single-Region key does, at the same price.
            multi_region=True,
            policy=json.dumps(policy),
            opts=self._opts(protect=args.protect, retain_on_delete=args.protect),
        )
        aws.kms.Alias(
            f"{self._name}-alias",
            name=f"alias/{args.name_prefix}",
            target_key_id=key.key_id,
            opts=self._opts(),
        )
        return key, json.dumps(policy)

    def _secret(
        self, role: str, secret_name: str, value: pulumi.Input[str], *, sensitive: bool = True
    ) -> aws.secretsmanager.Secret:
        secret = aws.secretsmanager.Secret(
            f"{self._name}-{role}",
            name=secret_name,
            kms_key_id=self.key_arn,
            recovery_window_in_days=self._recovery_days,
            opts=self._opts(protect=self._args.protect),
        )
        aws.secretsmanager.SecretVersion(
            f"{self._name}-{role}-value",
            secret_id=secret.id,
            # Tessera's public key lives in the vault too, but it is no secret.
            secret_string=pulumi.Output.secret(value) if sensitive else value,
            opts=self._opts(),
        )
        return secret

    def _seed(self, role: str) -> pulumi.Output[bytes]:
        seed = random.RandomBytes(f"{self._name}-{role}-seed", length=32, opts=self._opts())
        return pulumi.Output.secret(seed.base64.apply(base64.b64decode))

    def _create_tessera_keys(self) -> pulumi.Output[str]:
        """The shared Tessera pair in the vault; returns the public key."""
        args = self._args
        if args.existing.tessera_private_key is not None and args.existing.tessera_public_key:
            public: pulumi.Output[str] = pulumi.Output.from_input(args.existing.tessera_public_key)
            private = pulumi.Output.secret(args.existing.tessera_private_key)
        else:
            pair = self._seed("tessera").apply(tessera_key_pair)
            public = pulumi.Output.unsecret(pair.apply(lambda p: p[0]))
            private = pulumi.Output.secret(pair.apply(lambda p: p[1]))
        pub_name, key_name = tessera_key_secret_names(self.tessera_key_id)
        pub_secret = self._secret("tessera-pub", pub_name, public, sensitive=False)
        key_secret = self._secret("tessera-key", key_name, private)
        self.tessera_secret_arns = [pub_secret.arn, key_secret.arn]
        return public

    def _create_quorum_account(self) -> None:
        args = self._args
        if args.existing.quorum_account_keystore is not None:
            keystore = pulumi.Output.secret(args.existing.quorum_account_keystore)
            password = pulumi.Output.secret(args.existing.quorum_account_password or "")
        else:
            password = pulumi.Output.secret(
                random.RandomPassword(
                    f"{self._name}-quorum-account-password",
                    length=32,
                    special=False,
                    opts=self._opts(),
                ).result
            )
            keystore = pulumi.Output.secret(
                pulumi.Output.all(self._seed("quorum-account"), password).apply(
                    lambda v: account_keystore(v[0], v[1])
                )
            )
        self.quorum_account_address = pulumi.Output.unsecret(keystore.apply(keystore_address))
        value = pulumi.Output.all(keystore, password).apply(
            lambda v: json.dumps({"keystore": json.loads(v[0]), "password": v[1]})
        )
        secret = self._secret(
            "quorum-account", f"{self._args.secret_prefix}/quorum-account", value
        )
        self.quorum_account_secret_arn = secret.arn

    def _create_node_keys(self) -> None:
        """One devp2p key per Quorum node: unique identities, public enodes."""
        self.node_key_secret_arns = []
        self.node_public_keys = []
        for i in range(self._args.quorum_node_count):
            key_hex: pulumi.Output[str] = pulumi.Output.secret(
                self._seed(f"quorum-node-{i}").apply(bytes.hex)
            )
            secret = self._secret(
                f"quorum-node-{i}", f"{self._args.secret_prefix}/quorum-node-{i}", key_hex
            )
            self.node_key_secret_arns.append(secret.arn)
            self.node_public_keys.append(pulumi.Output.unsecret(key_hex.apply(node_public_key)))

    def _create_db_credentials(self) -> pulumi.Output[str]:
        # Our own secret rather than an RDS-managed one: RDS rotates its managed secret on a
        # schedule, while Tessera reads the password once at start and would lose new
        # connections after a rotation until restarted.
        password: pulumi.Output[str] = pulumi.Output.secret(
            random.RandomPassword(
                f"{self._name}-db-password", length=40, special=False, opts=self._opts()
            ).result
        )
        value = password.apply(lambda p: json.dumps({"username": DB_USERNAME, "password": p}))
        secret = self._secret("db", f"{self._args.secret_prefix}/tessera-db", value)
        self.db_secret_arn = secret.arn
        return password


def readable_secret_arns(
    keys: SharedKeys, *, tessera: bool, quorum: bool, node_index: int | None
) -> Sequence[pulumi.Output[str]]:
    """The secrets one machine may read: its role's shared secrets and its own node key."""
    arns: list[pulumi.Output[str]] = []
    if tessera:
        arns += [*keys.tessera_secret_arns, keys.db_secret_arn]
    if quorum:
        arns.append(keys.quorum_account_secret_arn)
        if node_index is not None:
            arns.append(keys.node_key_secret_arns[node_index])
    return arns
