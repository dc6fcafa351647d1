"""What runs on each machine, rendered as text from a NodeBootContext (no Pulumi inside).

Public API (stable; the node and proxy components call it with Outputs resolved):

- ``render_user_data(ctx) -> str``: the ``#cloud-config`` document describing one machine's
  whole boot on Amazon Linux 2023 x86_64 (packages, data volume, rendered files, systemd units,
  CloudWatch agent). Names and ARNs only, never secrets; files inside are plain text.
- ``render_packed_user_data(ctx) -> str``: that document packed for EC2's ``user_data_base64``
  by domain/user_data.py's ``pack_user_data`` (base64 of one gzip; ``UserDataTooLargeError``
  naming the machine when the gzip is over EC2's 16 KiB).
- ``render_tessera_config(ctx) -> str``: Tessera's JSON config (pair and tessera machines).
- ``validate_tessera_config(cfg: dict | str) -> None``: Tessera's own rules; raises
  ``TesseraConfigError`` naming the field and the value.
- ``render_quorum_files(ctx) -> dict[str, str]``: genesis.json, static-nodes.json,
  permissioned-nodes.json (when ``ctx.permissioned``), start-quorum.sh and wait-for-ptm.sh.
- ``render_ipc_proxy_config(ctx) -> str``: YAML for the proxy on tm.ipc (Quorum machines of
  setups full and tessera).
- ``render_standalone_proxy_config(*, quorum_dns_names, tessera_dns_names,
  tessera_public_key=None) -> str``: JSON for the ECS proxy behind the NLB (env
  ``QUORUM_PROXY_CONFIG``); with the key, Tessera's deep health check.

A context the boot cannot use raises ``BootContextError`` (a ValueError) naming the field.

What the machines need from the infrastructure (the boot assumes it, cannot check it offline):
- instance role: secretsmanager:GetSecretValue on the context's secret ARNs and on the Tessera
  key secrets named ``<tessera_key_id>Pub``/``Key`` (with kms:Decrypt via Secrets Manager);
  logs:CreateLogStream/PutLogEvents on ``log_group_name`` (docker's awslogs driver and the
  CloudWatch agent, which also needs cloudwatch:PutMetricData); on Quorum machines of setups
  full/tessera ecr:GetAuthorizationToken and pull rights on the proxy repository;
- egress to the Amazon Linux repositories (S3), Docker Hub (quorumengineering images) and Maven
  Central (the PostgreSQL JDBC jar, checked against its SHA-256), e.g. through NAT;
- IMDSv2 with hop limit 1 is enough: every container runs with the host network;
- the data volume attached as ``data_device_name`` (pass ``data_volume_id`` when known).

Ports, runtime paths, setups and roles are the domain package's (domain/ports.py, paths.py,
setups.py).
"""

from node_bootstrap.context import BootContextError, NodeBootContext, validate_context
from node_bootstrap.proxy import render_ipc_proxy_config, render_standalone_proxy_config
from node_bootstrap.quorum import render_quorum_files
from node_bootstrap.tessera import (
    TesseraConfigError,
    render_tessera_config,
    validate_tessera_config,
)
from node_bootstrap.user_data import AMI_FAMILY, render_packed_user_data, render_user_data

__all__ = [
    "AMI_FAMILY",
    "BootContextError",
    "NodeBootContext",
    "TesseraConfigError",
    "render_ipc_proxy_config",
    "render_packed_user_data",
    "render_quorum_files",
    "render_standalone_proxy_config",
    "render_tessera_config",
    "render_user_data",
    "validate_context",
    "validate_tessera_config",
]
