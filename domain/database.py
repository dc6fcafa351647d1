"""The one database every Tessera of a client node shares: its name, user and JDBC URL."""

from __future__ import annotations

from domain.ports import DB_PORT

DB_NAME = "tessera"
DB_USERNAME = "tessera"


def jdbc_url(primary: str, replica: str) -> str:
    """Both hosts in order: the driver tries them and keeps the writable one, so a promoted
    replica takes over without a config change on the machines."""
    return (
        f"jdbc:postgresql://{primary}:{DB_PORT},{replica}:{DB_PORT}/{DB_NAME}"
        "?targetServerType=primary&sslmode=require"
    )
