"""The proxy section (components/settings/proxy.py)."""

from __future__ import annotations

import pytest
from settings_support import settings

from components.settings import ConfigError


@pytest.mark.parametrize(
    "uri", ["docker.io/org/quorum-proxy:1.0", "ghcr.io/org/quorum-proxy@sha256:" + "b" * 64]
)
def test_a_proxy_image_outside_ecr_is_refused(uri: str) -> None:
    # The Quorum machines log in to ECR to pull it; the roles' pull rights are ECR's.
    with pytest.raises(ConfigError) as error:
        settings(proxyImageUri=uri)
    assert str(error.value).startswith("quorum-ha:proxyImageUri: ")
    assert "ECR" in str(error.value)


def test_a_proxy_image_in_ecr_is_accepted() -> None:
    uri = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/quorum-proxy:1.0"
    assert settings(proxyImageUri=uri).proxy.image_uri == uri
