"""The PostgreSQL JDBC driver Tessera runs with, fetched from Maven Central as the boot does.

The version and SHA-256 are domain/versions.py's (POSTGRES_JDBC_*): the jar start-tessera.sh
mounts into Tessera's lib/. The drill drives it with JdbcWriter.java through the very JDBC URL
of the Tessera configs, so the failover figure is the driver's, with Tessera's URL.
"""

from __future__ import annotations

import hashlib
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from domain.versions import POSTGRES_JDBC_SHA256, POSTGRES_JDBC_VERSION
from tools.cluster.procs import MissingPieceError

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / "build" / "cluster-cache"  # /build/ is gitignored
WRITER = Path(__file__).with_name("JdbcWriter.java")
JAR_URL = (
    "https://repo1.maven.org/maven2/org/postgresql/postgresql/"
    f"{POSTGRES_JDBC_VERSION}/postgresql-{POSTGRES_JDBC_VERSION}.jar"
)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def java() -> str:
    found = shutil.which("java")
    if found is None:
        raise MissingPieceError("no java on PATH: apt-get install openjdk-17-jdk-headless")
    return found


def driver_jar(cache: Path = CACHE) -> Path:
    """The cached driver jar, downloaded and checked against its pinned SHA-256 if needed."""
    jar = cache / f"postgresql-{POSTGRES_JDBC_VERSION}.jar"
    if jar.exists() and _sha256(jar) == POSTGRES_JDBC_SHA256:
        return jar
    cache.mkdir(parents=True, exist_ok=True)
    part = jar.with_suffix(".part")
    try:
        with urllib.request.urlopen(JAR_URL, timeout=60) as answer:  # noqa: S310 (fixed URL)
            part.write_bytes(answer.read())
    except (urllib.error.URLError, TimeoutError) as e:
        raise MissingPieceError(f"Maven Central unreachable ({JAR_URL}): {e}") from None
    if _sha256(part) != POSTGRES_JDBC_SHA256:
        part.unlink()
        raise MissingPieceError(f"{JAR_URL} does not match its pinned SHA-256")
    part.replace(jar)
    return jar
