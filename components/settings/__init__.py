"""Stack config -> one frozen, validated `Settings` object, before any resource is declared.

This is the only package that reads `pulumi.Config`. One module per section, each beside the
component it configures and importing no cloud provider: network, ingress, nodes,
quorum_network, database, proxy, tls, keys, alarms, tags. This module reads the keys, checks
what spans sections and nests the sections in `Settings`. Every refusal is a `ConfigError`
whose one-line message names the key, the value and what is allowed; `__main__.py` turns it
into a `pulumi.RunError` so the operator sees that line and no traceback.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace

import pulumi
from pulumi.runtime import config as runtime_config

from components.settings import (
    alarms,
    database,
    ingress,
    keys,
    network,
    nodes,
    proxy,
    quorum_network,
    tags,
    tls,
)
from components.settings.alarms import AlarmSettings
from components.settings.database import DatabaseSettings
from components.settings.ingress import IngressSettings
from components.settings.keys import ExistingKeys
from components.settings.network import ExistingNetwork, NetworkSettings
from components.settings.nodes import NodeSettings
from components.settings.proxy import ProxySettings
from components.settings.quorum_network import QuorumNetworkSettings
from components.settings.raw import NAMESPACE, Raw
from components.settings.tls import TlsSettings
from domain.errors import ConfigError
from domain.naming import stack_name_prefix
from domain.setups import SETUPS, Setup
from domain.stacks import is_non_production
from domain.validation import REGION_ALLOWED, is_supported_region

__all__ = ["ConfigError", "Settings", "load_settings", "parse_settings"]


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the program builds from, validated: stack-wide values and one section per
    component."""

    stack: str
    project: str
    region: str
    setup: Setup
    deletion_protection: bool  # on the database, the KMS key and the NLB
    network: NetworkSettings
    ingress: IngressSettings
    nodes: NodeSettings
    quorum_network: QuorumNetworkSettings
    database: DatabaseSettings
    proxy: ProxySettings
    keys: ExistingKeys
    tags: Mapping[str, str] = field(default_factory=dict)
    tls: TlsSettings | None = None
    alarms: AlarmSettings = field(default_factory=AlarmSettings)

    @property
    def name_prefix(self) -> str:
        """Prefix for AWS names unique per account and region (`stack_name_prefix`)."""
        return stack_name_prefix(self.stack)

    @property
    def non_production(self) -> bool:
        """A throwaway stack (dev, dev-*, e2e-*): its names must be reusable at once."""
        return is_non_production(self.stack)

    @property
    def secret_recovery_days(self) -> int:
        """0 deletes secrets without recovery (Secrets Manager DeleteSecret
        ForceDeleteWithoutRecovery), so a re-created throwaway stack can reuse their names;
        production keeps Secrets Manager's default 30-day window."""
        return 0 if self.non_production else 30


# Every key this program reads, each section's own. Unknown `quorum-ha:` keys are refused so a
# typo never silently falls back to a default.
KEYS = (
    "setup",
    "deletionProtection",
    *nodes.KEYS,
    *network.KEYS,
    *ingress.KEYS,
    *quorum_network.KEYS,
    *database.KEYS,
    *proxy.KEYS,
    *tls.KEYS,
    *tags.KEYS,
    *alarms.KEYS,
    *keys.KEYS,
)


def parse_settings(
    values: Mapping[str, str],
    *,
    stack: str,
    project: str = NAMESPACE,
    region: str | None,
    secret: Collection[str] = (),
) -> Settings:
    """Validate raw config strings (keys without the namespace) into `Settings`; `secret`
    names the keys the stack config holds as secrets (never echoed, even under a typo)."""
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        raise ConfigError(
            f"{NAMESPACE}:{unknown[0]}",
            values[unknown[0]],
            "a known key: see Pulumi.yaml template.config (is it a typo?)",
            secret=unknown[0] in secret,
        )
    raw = Raw(values)
    if not region or not is_supported_region(region):
        raise ConfigError("aws:region", region, REGION_ALLOWED)
    setup = raw.str_("setup", "pair")
    if setup not in SETUPS:
        raise ConfigError(raw.key("setup"), setup, "'pair', 'full' or 'tessera'")
    node_settings = nodes.parse(raw, setup)

    network_settings = network.parse(raw)
    proxy_settings = proxy.parse(raw)
    if (
        not proxy_settings.internal_nlb
        and isinstance(network_settings, ExistingNetwork)
        and not network_settings.public_subnet_ids
    ):
        raise ConfigError(
            raw.key("network.publicSubnetIds"),
            [],
            "2+ public subnet ids when internalNlb is false",
        )
    production = not is_non_production(stack)
    return Settings(
        stack=stack,
        project=project,
        region=region,
        setup=setup,
        deletion_protection=raw.bool_("deletionProtection", production),
        network=network_settings,
        ingress=ingress.parse(raw),
        nodes=node_settings,
        quorum_network=quorum_network.parse(raw),
        database=database.parse(
            raw, region=region, network=network_settings, production=production
        ),
        proxy=proxy_settings,
        keys=keys.parse(raw),
        tags=tags.parse(raw),
        tls=tls.parse(raw, region),
        alarms=alarms.parse(raw, region),
    )


def load_settings() -> Settings:
    """Read the stack's `quorum-ha:` config once and validate it.

    Secret keys are kept as the SDK's secret Outputs (`Config.get_secret`), so their secretness
    never lapses. Their text is checked first (a keystore its password opens, a Tessera pair
    that matches) from the same runtime config `get_secret` reads: the SDK offers no synchronous
    read of a secret, and a refusal must come before any resource is declared.
    """
    prefix = f"{NAMESPACE}:"
    present = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    names = {key[len(prefix) :] for key in present if key.startswith(prefix)}
    config = pulumi.Config(NAMESPACE)
    values = {
        name: value
        for name in names
        if (value := runtime_config.get_config(config.full_key(name))) is not None
    }
    secret_in_config = set(runtime_config.get_config_secret_keys_env())
    settings = parse_settings(
        values,
        stack=pulumi.get_stack(),
        project=pulumi.get_project(),
        region=pulumi.Config("aws").get("region"),
        secret={
            name
            for name in names
            if runtime_config.is_config_secret(key := config.full_key(name))
            or key in secret_in_config
        },
    )

    def secret(name: str) -> pulumi.Output[str] | None:
        return config.get_secret(name) if name in names else None

    existing = replace(
        settings.keys,
        tessera_private_key=secret("tesseraPrivateKey"),
        quorum_account_keystore=secret("quorumAccountKeystore"),
        quorum_account_password=secret("quorumAccountPassword"),
    )
    return replace(settings, keys=existing)
