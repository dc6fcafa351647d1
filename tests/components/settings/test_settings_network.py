"""The network section (components/settings/network.py)."""

from __future__ import annotations

from settings_support import settings

from components.settings.network import ExistingNetwork, StackReferenceNetwork


def test_existing_network_and_stack_reference_are_read() -> None:
    existing = settings(
        network={
            "mode": "existing",
            "vpcId": "vpc-0123456789abcdef0",
            "privateSubnetIds": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
        }
    ).network
    assert isinstance(existing, ExistingNetwork)
    assert existing.private_subnet_ids == ("subnet-0123456789abcdef0", "subnet-0123456789abcdef1")
    referenced = settings(
        network={"mode": "stackReference", "stack": "acme/net/prod", "vpcIdOutput": "id"}
    ).network
    assert referenced == StackReferenceNetwork(stack="acme/net/prod", vpc_id_output="id")
