"""The standalone proxy: its Fargate tasks, its image and its NLB (components/proxy_service.py)."""

from __future__ import annotations

from dataclasses import dataclass

from components.settings.raw import Raw
from domain.errors import ConfigError
from domain.naming import ecr_repository_arn

KEYS = ("proxyTaskCount", "proxyCpu", "proxyMemory", "proxyImageUri", "internalNlb")
# Fargate task sizes AWS accepts, cpu units -> allowed memory (MiB).
FARGATE_SIZES: dict[int, tuple[int, ...]] = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4097, 1024)),
    1024: tuple(range(2048, 8193, 1024)),
    2048: tuple(range(4096, 16385, 1024)),
    4096: tuple(range(8192, 30721, 1024)),
}


@dataclass(frozen=True, kw_only=True)
class ProxySettings:
    """Task count and size, the image (None: built from proxy_image/), and the NLB's scheme."""

    task_count: int = 2
    cpu: int = 512
    memory: int = 1024
    image_uri: str | None = None
    internal_nlb: bool = True


def parse(raw: Raw) -> ProxySettings:
    proxy_task_count = raw.int_("proxyTaskCount", 2)
    if not 2 <= proxy_task_count <= 10:
        raise ConfigError(raw.key("proxyTaskCount"), proxy_task_count, "2 to 10 (HA needs 2+)")
    proxy_cpu = raw.int_("proxyCpu", 512)
    if proxy_cpu not in FARGATE_SIZES:
        raise ConfigError(raw.key("proxyCpu"), proxy_cpu, f"one of {sorted(FARGATE_SIZES)}")
    proxy_memory = raw.int_("proxyMemory", FARGATE_SIZES[proxy_cpu][0])
    if proxy_memory not in FARGATE_SIZES[proxy_cpu]:
        sizes = FARGATE_SIZES[proxy_cpu]
        raise ConfigError(
            raw.key("proxyMemory"),
            proxy_memory,
            f"{sizes[0]} to {sizes[-1]} MiB in steps Fargate accepts for proxyCpu {proxy_cpu}",
        )
    proxy_image_uri = raw.str_("proxyImageUri")
    if proxy_image_uri is not None:
        try:
            ecr_repository_arn(proxy_image_uri)
        except ValueError:
            raise ConfigError(
                raw.key("proxyImageUri"),
                proxy_image_uri,
                "an ECR image URI with :tag or @sha256:<digest>, e.g. "
                "123456789012.dkr.ecr.us-east-1.amazonaws.com/quorum-proxy:1.0 (the tasks and "
                "machines pull it with their roles)",
            ) from None
    return ProxySettings(
        task_count=proxy_task_count,
        cpu=proxy_cpu,
        memory=proxy_memory,
        image_uri=proxy_image_uri,
        internal_nlb=raw.bool_("internalNlb", True),
    )
