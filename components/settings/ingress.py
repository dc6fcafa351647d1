"""Who may reach the listeners and devp2p (components/network.py `SecurityGroups`)."""

from __future__ import annotations

from dataclasses import dataclass

from components.settings.raw import Raw, cidr_block
from domain.errors import ConfigError

KEYS = ("allowedCidrs", "allowInternetIngress", "quorumP2pCidrs")
WORLD_CIDRS = ("0.0.0.0/0", "::/0")


@dataclass(frozen=True, kw_only=True)
class IngressSettings:
    """Client CIDRs for the NLB listeners, and the CIDRs of other Quorum nodes for devp2p."""

    allowed_cidrs: tuple[str, ...] = ()
    quorum_p2p_cidrs: tuple[str, ...] = ()
    allow_internet_ingress: bool = False


def parse(raw: Raw) -> IngressSettings:
    """Never the whole internet unless asked."""
    allow_world = raw.bool_("allowInternetIngress", False)
    allowed_cidrs = raw.list_("allowedCidrs", cidr_block)
    quorum_p2p_cidrs = raw.list_("quorumP2pCidrs", cidr_block)
    for name, cidrs in (("allowedCidrs", allowed_cidrs), ("quorumP2pCidrs", quorum_p2p_cidrs)):
        for cidr in cidrs:
            if cidr in WORLD_CIDRS and not allow_world:
                raise ConfigError(
                    raw.key(name),
                    cidr,
                    "CIDRs narrower than the whole internet, unless allowInternetIngress is true",
                )
    return IngressSettings(
        allowed_cidrs=allowed_cidrs,
        quorum_p2p_cidrs=quorum_p2p_cidrs,
        allow_internet_ingress=allow_world,
    )
