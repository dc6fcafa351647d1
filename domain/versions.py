"""The releases the project runs and pins: the one home of each version."""

from __future__ import annotations

# What a stack runs unless quorum-ha:quorumVersion / quorum-ha:tesseraVersion say otherwise.
DEFAULT_QUORUM_VERSION = "24.4.1"
DEFAULT_TESSERA_VERSION = "24.4"

# The PostgreSQL JDBC driver Tessera needs (only H2 ships). The checksum is the Maven Central
# jar's SHA-256 (as pinned by nixpkgs' postgresql-jdbc 42.7.7); the machine verifies it at boot.
POSTGRES_JDBC_VERSION = "42.7.7"
POSTGRES_JDBC_SHA256 = "157963d60ae66d607e09466e8c0cdf8087e9cb20d0159899ffca96bca2528460"
