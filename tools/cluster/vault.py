"""Secrets Manager emulated by moto's server mode, holding the stack's secrets by their names."""

from __future__ import annotations

import importlib.util
import json
import secrets
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from domain.keys import tessera_key_pair
from domain.naming import tessera_key_secret_names
from tools.cluster.procs import (
    DrillError,
    MissingPieceError,
    Procs,
    free_port,
    port_open,
    wait_until,
)

REGION = "eu-west-1"
# Fake credentials: moto accepts any; real ones must never reach a local run.
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": REGION,
    "AWS_DEFAULT_REGION": REGION,
}


@dataclass
class Vault:
    """moto_server on 127.0.0.1 and the secrets created in it (names -> ARNs)."""

    port: int
    arns: dict[str, str] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> Any:
        return boto3.client(
            "secretsmanager",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        )

    def put(self, name: str, value: str) -> str:
        arn = str(self.client().create_secret(Name=name, SecretString=value)["ARN"])
        self.arns[name] = arn
        return arn

    def get(self, name_or_arn: str) -> str:
        return str(self.client().get_secret_value(SecretId=name_or_arn)["SecretString"])


def moto_server_command() -> list[str]:
    """moto's server entry point from this interpreter's environment, or MissingPieceError."""
    # moto's server mode runs on Flask (the moto[server] extra)
    if not all(importlib.util.find_spec(m) for m in ("flask", "flask_cors")):
        raise MissingPieceError(
            "moto's server mode needs Flask and flask-cors: pip install -r requirements-dev.txt"
        )
    exe = Path(sys.executable).with_name("moto_server")
    if not exe.exists():
        found = shutil.which("moto_server")
        if found is None:
            raise MissingPieceError("moto_server not found: pip install -r requirements-dev.txt")
        exe = Path(found)
    return [str(exe)]


def start_vault(procs: Procs) -> Vault:
    port = free_port()
    proc = procs.start("moto-server", [*moto_server_command(), "-H", "127.0.0.1", "-p", str(port)])
    try:
        wait_until("moto_server listening", lambda: port_open(port), 60)
    except DrillError as e:
        raise DrillError(f"{e}\n{proc.tail()}") from None
    return Vault(port)


@dataclass(frozen=True)
class StackSecrets:
    """What the stack keeps in Secrets Manager for one client node, as the program names it."""

    tessera_key_id: str
    public_key: str
    db_username: str
    db_password: str
    db_secret_arn: str
    quorum_account_secret_arn: str
    quorum_node_key_secret_arn: str


def put_stack_secrets(vault: Vault, tessera_key_id: str) -> StackSecrets:
    """Tessera's key pair under the names the stack gives them, and the DB credentials."""
    public, private = tessera_key_pair(secrets.token_bytes(32))
    public_name, private_name = tessera_key_secret_names(tessera_key_id)
    vault.put(public_name, public)
    vault.put(private_name, private)
    username, password = "tessera_owner", secrets.token_urlsafe(18)
    db_arn = vault.put(
        f"{tessera_key_id}-db", json.dumps({"username": username, "password": password})
    )
    # No Quorum runs in the drill; the context still names these secrets by ARN.
    account_arn = vault.put(f"{tessera_key_id}-quorum-account", "{}")
    node_key_arn = vault.put(f"{tessera_key_id}-quorum-node-key-0", "00")
    return StackSecrets(
        tessera_key_id, public, username, password, db_arn, account_arn, node_key_arn
    )
