"""Where the real Tessera comes from: Maven Central, pinned by version line and SHA-256.

Checked on 2026-12-01 from this project's machines (the only Maven repository they reach is
Maven Central): net.consensys.quorum.tessera has no tessera-dist, tessera-app or aws-key-vault
at any version there (maven-metadata.xml answers 404), and only some 1.0.0 library modules whose
own dependencies (tessera-partyinfo 1.0.0) are absent too. Tessera's build publishes through
Sonatype's s01 Nexus (build.gradle, nexusPublishing), which these machines cannot reach. So no
release is pinned below; resolve() says exactly that, and the drill reports Tessera as missing.
"""

from __future__ import annotations

import re
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass

from domain.versions import DEFAULT_TESSERA_VERSION
from tools.cluster.procs import MissingPieceError, NotPublishedError

MAVEN_CENTRAL = "https://repo1.maven.org/maven2"
GROUP = "net.consensys.quorum.tessera"
DIST = "tessera-dist"  # the .tar distribution: bin/tessera + lib/*.jar
AWS_KEY_VAULT = "aws-key-vault"  # the AWS Secrets Manager key vault the aws- image adds
# release -> SHA-256 of tessera-dist-<release>.tar; empty until a release can be fetched here.
DIST_SHA256: dict[str, str] = {}


@dataclass(frozen=True)
class TesseraRelease:
    version: str
    dist_url: str
    sha256: str


def artifact_dir(artifact: str) -> str:
    return f"{MAVEN_CENTRAL}/{GROUP.replace('.', '/')}/{artifact}"


def _versions(artifact: str) -> list[str]:
    url = f"{artifact_dir(artifact)}/maven-metadata.xml"
    try:
        with urllib.request.urlopen(url, timeout=20) as answer:  # noqa: S310 (fixed https URL)
            text = answer.read().decode()
    except urllib.error.HTTPError as e:
        if e.code != 404:
            raise MissingPieceError(f"Maven Central answered HTTP {e.code} for {url}") from None
        raise NotPublishedError(
            f"Tessera is not on Maven Central: {url} answered HTTP {e.code} (no "
            f"{GROUP}:{artifact} at any version). Tessera {DEFAULT_TESSERA_VERSION} is published "
            "to Sonatype's s01 repository, which this machine cannot reach; put its "
            f"{DIST} tar in the cluster cache and pin its SHA-256 in DIST_SHA256 "
            "(tools/cluster/tessera_dist.py)"
        ) from None
    except (urllib.error.URLError, TimeoutError) as e:
        raise MissingPieceError(f"Maven Central unreachable ({url}): {e}") from None
    return re.findall(r"<version>([^<]+)</version>", text)


def resolve(line: str = DEFAULT_TESSERA_VERSION) -> TesseraRelease:
    """The newest release of the pinned line with a pinned SHA-256, or MissingPieceError."""
    if shutil.which("java") is None:
        raise MissingPieceError("no java on PATH: apt-get install openjdk-17-jdk-headless")
    versions = [v for v in _versions(DIST) if v == line or v.startswith(line + ".")]
    if not versions:
        raise MissingPieceError(f"Maven Central lists no {GROUP}:{DIST} {line}.x")
    newest = max(versions, key=lambda v: tuple(int(p) for p in re.findall(r"\d+", v)))
    sha = DIST_SHA256.get(newest)
    if sha is None:
        raise MissingPieceError(
            f"{GROUP}:{DIST}:{newest} has no SHA-256 pinned in tools/cluster/tessera_dist.py"
        )
    url = f"{artifact_dir(DIST)}/{newest}/{DIST}-{newest}.tar"
    return TesseraRelease(newest, url, sha)
