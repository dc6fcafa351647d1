"""The cloud-init user data that fully describes one machine's boot (Amazon Linux 2023).

The layout on the machine is domain/paths.py's; secrets fetched at start land in tmpfs under
its SECRETS_DIR (0600, the service user's). The user data itself holds names and ARNs only.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from domain.metrics import (
    HOST_NAMESPACE,
    NODE_LABEL,
    PROXY_JOB,
    QUORUM_JOB,
    QUORUM_NAMESPACE,
    ScrapeJob,
    Source,
    prometheus_scrape_config,
    prometheus_section,
)
from domain.paths import (
    BIN_DIR,
    BOOT_ENV,
    DATA_DIR,
    ETC_DIR,
    LOG_DIR,
    RUN_DIR,
    SECRETS_DIR,
    TM_IPC_PATH,
)
from domain.ports import (
    PROXY_ADMIN_PORT,
    QUORUM_METRICS_PORT,
    QUORUM_P2P_PORT,
    QUORUM_RPC_PORT,
    QUORUM_WS_PORT,
)
from domain.user_data import pack_user_data
from domain.versions import POSTGRES_JDBC_SHA256, POSTGRES_JDBC_VERSION
from node_bootstrap.context import (
    NodeBootContext,
    jdbc_to_libpq_uri,
    validate_context,
)
from node_bootstrap.proxy import render_ipc_proxy_config
from node_bootstrap.quorum import render_quorum_files
from node_bootstrap.scripts import (
    APPLY_TESSERA_SCHEMA_SH,
    COMMON_SH,
    MOUNT_DATA_VOLUME_SH,
    SERVICE_UID,
    SERVICE_USER,
    START_IPC_PROXY_SH,
    START_TESSERA_SH,
    TESSERA_SCHEMA_SQL,
)
from node_bootstrap.tessera import render_tessera_config

AMI_FAMILY = "Amazon Linux 2023 (x86_64)"
CLOUDWATCH_AGENT_CTL = "/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl"


def quorum_image(ctx: NodeBootContext) -> str:
    return f"quorumengineering/quorum:{ctx.quorum_version}"


def tessera_image(ctx: NodeBootContext) -> str:
    # The aws- flavour carries the AWS Secrets Manager key vault. Tessera's release workflow
    # (Consensys/tessera .github/workflows/release.yml, commit a9632c5) pushes
    # quorumengineering/tessera:aws-<minor> and aws-<full> from docker/tessera.aws.Dockerfile.
    return f"quorumengineering/tessera:aws-{ctx.tessera_version}"


def render_boot_env(ctx: NodeBootContext) -> str:
    """/etc/quorum-ha/boot.env: read by the scripts; valid for bash and systemd alike."""
    validate_context(ctx)
    values: dict[str, str | int] = {
        "SETUP": ctx.setup,
        "ROLE": ctx.role,
        "NODE_INDEX": ctx.index,
        "NODE_DNS_NAME": ctx.node_dns_name,
        "AWS_REGION": ctx.region,
        "LOG_GROUP_NAME": ctx.log_group_name,
        "SERVICE_UID": SERVICE_UID,
        "SERVICE_GID": SERVICE_UID,
        "DATA_DIR": DATA_DIR,
        "DATA_DEVICE_NAME": ctx.data_device_name,
        "DATA_VOLUME_ID": ctx.data_volume_id or "",
        "TM_IPC_PATH": TM_IPC_PATH,
    }
    if ctx.runs_quorum:
        values |= {
            "QUORUM_IMAGE": quorum_image(ctx),
            "QUORUM_ACCOUNT_SECRET_ARN": ctx.quorum_account_secret_arn,
            "QUORUM_NODE_KEY_SECRET_ARN": ctx.quorum_node_key_secret_arn,
            "NETWORK_ID": ctx.network_id,
            "QUORUM_PERMISSIONED": "true" if ctx.permissioned else "false",
            "QUORUM_RPC_PORT": QUORUM_RPC_PORT,
            "QUORUM_WS_PORT": QUORUM_WS_PORT,
            "QUORUM_P2P_PORT": QUORUM_P2P_PORT,
            "QUORUM_METRICS_PORT": QUORUM_METRICS_PORT,
        }
    if ctx.runs_tessera:
        values |= {
            "TESSERA_IMAGE": tessera_image(ctx),
            "DB_SECRET_ARN": ctx.db_secret_arn,
            "TESSERA_DB_URI": jdbc_to_libpq_uri(ctx.jdbc_url),
            "PG_JDBC_VERSION": POSTGRES_JDBC_VERSION,
            "PG_JDBC_SHA256": POSTGRES_JDBC_SHA256,
        }
    if ctx.runs_ipc_proxy and ctx.proxy_image_uri is not None:
        values["PROXY_IMAGE"] = ctx.proxy_image_uri
    lines = ["# quorum-ha boot settings: names and ARNs only, never secrets."]
    # validate_context refused quotes, '$', '`', '\\' and whitespace in every value.
    lines += [f'{key}="{value}"' for key, value in values.items()]
    return "\n".join(lines) + "\n"


def _log_path(script: str) -> str:
    """The file a unit appends its script's output to (one per script, shipped by the agent)."""
    return f"{LOG_DIR}/{script.rsplit('/', 1)[-1].removesuffix('.sh')}.log"


def _log_name(path: str) -> str:
    return path.rsplit("/", 1)[-1].removesuffix(".log")


def _unit(description: str, after: list[str], script: str, stop: str | None) -> str:
    wants = " ".join(after)
    stop_lines = f"ExecStop=/usr/bin/docker stop {stop}\n" if stop else ""
    log = _log_path(script)
    return f"""\
[Unit]
Description={description}
Wants={wants}
After={wants}
# Never stop retrying: a node that gave up is worse than one that keeps trying.
StartLimitIntervalSec=0

[Service]
Type=simple
ExecStart={script}
{stop_lines}# Restart on any exit, success included; geth's deliberate exit 112 (Tessera failing on
# GET /transaction) must come back too, so no SuccessExitStatus may list it.
Restart=always
RestartForceExitStatus=112
RestartSec=5
TimeoutStopSec=120
StandardOutput=append:{log}
StandardError=append:{log}

[Install]
WantedBy=multi-user.target
"""


_BASE = ["network-online.target", "docker.service", "quorum-ha-data.service"]
MOUNT_SCRIPT = f"{BIN_DIR}/mount-data-volume.sh"

DATA_UNIT = f"""\
[Unit]
Description=quorum-ha encrypted data volume at {DATA_DIR}
Wants=network-online.target
After=network-online.target local-fs.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart={MOUNT_SCRIPT}
Restart=on-failure
RestartSec=10
TimeoutStartSec=15min
StandardOutput=append:{_log_path(MOUNT_SCRIPT)}
StandardError=append:{_log_path(MOUNT_SCRIPT)}

[Install]
WantedBy=multi-user.target
"""

TMPFILES = f"""\
d {RUN_DIR} 0750 {SERVICE_UID} {SERVICE_UID} -
d {SECRETS_DIR} 0700 {SERVICE_UID} {SERVICE_UID} -
d {LOG_DIR} 0750 root root -
"""

# The units append to files under LOG_DIR (the CloudWatch agent ships them) on a 30 GiB root
# volume: logrotate (AL2023 package) caps each at LOG_MAX_SIZE x (LOG_ROTATIONS + 1), checked
# every quarter hour by our own timer. copytruncate keeps the file systemd appends to (its
# O_APPEND descriptor stays valid); the agent only reads the named *.log files.
LOG_MAX_SIZE = "50M"
LOG_ROTATIONS = 4
LOGROTATE_CONF = f"{ETC_DIR}/logrotate.conf"
LOGROTATE_CONFIG = f"""\
{LOG_DIR}/*.log {{
    size {LOG_MAX_SIZE}
    rotate {LOG_ROTATIONS}
    compress
    copytruncate
    missingok
    notifempty
}}
"""

LOGROTATE_SERVICE = f"""\
[Unit]
Description=Rotate the quorum-ha service logs in {LOG_DIR}

[Service]
Type=oneshot
ExecStart=/usr/sbin/logrotate --state {LOG_DIR}/.logrotate.status {LOGROTATE_CONF}
"""

LOGROTATE_TIMER = """\
[Unit]
Description=Rotate the quorum-ha service logs every quarter hour

[Timer]
OnCalendar=*:0/15
AccuracySec=1min
Persistent=true

[Install]
WantedBy=timers.target
"""


# The long-running services' unit names (the e2e failure drill stops and starts them).
TESSERA_UNIT = "quorum-ha-tessera.service"
QUORUM_UNIT = "quorum-ha-quorum.service"


def _services(ctx: NodeBootContext) -> dict[str, str]:
    """Unit name -> text of the machine's long-running services and the data volume."""
    units = {"quorum-ha-data.service": DATA_UNIT}
    ptm_unit = None
    if ctx.runs_tessera:
        units[TESSERA_UNIT] = _unit(
            "Tessera privacy manager (quorum-ha)", _BASE, f"{BIN_DIR}/start-tessera.sh", "tessera"
        )
        ptm_unit = TESSERA_UNIT
    if ctx.runs_ipc_proxy:
        units["quorum-ha-proxy.service"] = _unit(
            "quorum-ha IPC proxy on tm.ipc to every Tessera Q2T",
            _BASE,
            f"{BIN_DIR}/start-ipc-proxy.sh",
            "quorum-proxy",
        )
        ptm_unit = "quorum-ha-proxy.service"
    if ctx.runs_quorum:
        after = [*_BASE, *([ptm_unit] if ptm_unit else [])]
        units[QUORUM_UNIT] = _unit(
            "GoQuorum node (quorum-ha)", after, f"{BIN_DIR}/start-quorum.sh", "quorum"
        )
    return units


def enabled_units(ctx: NodeBootContext) -> list[str]:
    """What cloud-init enables and starts: the services and the log rotation timer."""
    return [*_services(ctx), "quorum-ha-logrotate.timer"]


def _units(ctx: NodeBootContext) -> dict[str, str]:
    return _services(ctx) | {
        "quorum-ha-logrotate.service": LOGROTATE_SERVICE,
        "quorum-ha-logrotate.timer": LOGROTATE_TIMER,
    }


def service_logs(ctx: NodeBootContext) -> list[str]:
    """Every file the machine's units append to, in unit order."""
    return [
        line.split(":", 1)[1]
        for text in _services(ctx).values()
        for line in text.splitlines()
        if line.startswith("StandardOutput=append:")
    ]


def _scrape_jobs(ctx: NodeBootContext) -> dict[ScrapeJob, Source]:
    """geth on every Quorum machine; the IPC proxy too where it runs (setups 2 and 3)."""
    jobs: dict[ScrapeJob, Source] = {
        ScrapeJob(QUORUM_JOB, f"127.0.0.1:{QUORUM_METRICS_PORT}", "/debug/metrics/prometheus"): (
            "geth"
        )
    }
    if ctx.runs_ipc_proxy:
        jobs[ScrapeJob(PROXY_JOB, f"127.0.0.1:{PROXY_ADMIN_PORT}", "/metrics")] = "ipc_proxy"
    return jobs


def _prometheus_config(ctx: NodeBootContext) -> str:
    return prometheus_scrape_config(list(_scrape_jobs(ctx)), {NODE_LABEL: ctx.node_dns_name})


def cloudwatch_agent_config(ctx: NodeBootContext) -> dict[str, Any]:
    """Host metrics, boot and service logs, and geth's Prometheus metrics on Quorum machines."""
    logs: dict[str, Any] = {
        "logs_collected": {
            "files": {
                "collect_list": [
                    {
                        "file_path": "/var/log/cloud-init-output.log",
                        "log_group_name": ctx.log_group_name,
                        "log_stream_name": f"{ctx.node_dns_name}/cloud-init",
                    },
                    # Each file by name, to its own stream: a glob without publish_multi_logs
                    # tails only the newest match (plugins/inputs/logfile/logfile.go). A file
                    # that appears later is read from its start (from_beginning defaults to
                    # true: translator/.../collect_list/ruleFromBeginning.go).
                    *(
                        {
                            "file_path": path,
                            "log_group_name": ctx.log_group_name,
                            "log_stream_name": f"{ctx.node_dns_name}/{_log_name(path)}",
                        }
                        for path in service_logs(ctx)
                    ),
                ]
            }
        }
    }
    if ctx.runs_quorum:
        # geth's metrics, as the alarms and dashboard name them (domain/metrics.py).
        logs["metrics_collected"] = {
            "prometheus": prometheus_section(
                sources={job.job: source for job, source in _scrape_jobs(ctx).items()},
                namespace=QUORUM_NAMESPACE,
                log_group=ctx.log_group_name,
                config_path=f"{ETC_DIR}/prometheus.yaml",
            )
        }
    return {
        "agent": {"metrics_collection_interval": 60, "run_as_user": "root"},
        "metrics": {
            "namespace": HOST_NAMESPACE,
            "append_dimensions": {"InstanceId": "${aws:InstanceId}"},
            "metrics_collected": {
                "cpu": {"measurement": ["cpu_usage_active"], "totalcpu": True},
                "mem": {"measurement": ["mem_used_percent"]},
                "disk": {"measurement": ["used_percent"], "resources": ["/", DATA_DIR]},
            },
        },
        "logs": logs,
    }


def machine_files(ctx: NodeBootContext) -> dict[str, tuple[str, str]]:
    """Path -> (permissions, content) of every file the boot writes."""
    validate_context(ctx)
    files: dict[str, tuple[str, str]] = {
        BOOT_ENV: ("0644", render_boot_env(ctx)),
        f"{BIN_DIR}/common.sh": ("0644", COMMON_SH),
        f"{BIN_DIR}/mount-data-volume.sh": ("0755", MOUNT_DATA_VOLUME_SH),
        "/etc/tmpfiles.d/quorum-ha.conf": ("0644", TMPFILES),
        LOGROTATE_CONF: ("0644", LOGROTATE_CONFIG),
        f"{ETC_DIR}/cloudwatch-agent.json": (
            "0644",
            json.dumps(cloudwatch_agent_config(ctx), indent=2) + "\n",
        ),
    }
    for name, text in _units(ctx).items():
        files[f"/etc/systemd/system/{name}"] = ("0644", text)
    if ctx.runs_tessera:
        files[f"{ETC_DIR}/tessera/tessera-config.json"] = ("0644", render_tessera_config(ctx))
        files[f"{ETC_DIR}/sql/tessera-schema.sql"] = ("0644", TESSERA_SCHEMA_SQL)
        files[f"{BIN_DIR}/start-tessera.sh"] = ("0755", START_TESSERA_SH)
        files[f"{BIN_DIR}/apply-tessera-schema.sh"] = ("0755", APPLY_TESSERA_SCHEMA_SH)
    if ctx.runs_ipc_proxy:
        files[f"{ETC_DIR}/proxy/config.yaml"] = ("0644", render_ipc_proxy_config(ctx))
        files[f"{BIN_DIR}/start-ipc-proxy.sh"] = ("0755", START_IPC_PROXY_SH)
    if ctx.runs_quorum:
        for name, text in render_quorum_files(ctx).items():
            if name.endswith(".sh"):
                files[f"{BIN_DIR}/{name}"] = ("0755", text)
            else:
                files[f"{ETC_DIR}/quorum/{name}"] = ("0644", text)
        files[f"{ETC_DIR}/prometheus.yaml"] = ("0644", _prometheus_config(ctx))
    return files


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so the user data reads like the files it writes."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _write_file(path: str, mode: str, text: str) -> dict[str, str]:
    # Plain text: the whole document is gzipped once (pack_user_data), which packs far
    # tighter than gzip+base64 per file.
    return {"path": path, "permissions": mode, "owner": "root:root", "content": text}


def cloud_config(ctx: NodeBootContext) -> dict[str, Any]:
    """The #cloud-config document as a dict (see render_user_data)."""
    files = machine_files(ctx)
    # Every name is in AL2023's package lists (test_user_data.py cites them): one unknown name
    # fails cloud-init's whole install.
    packages = ["docker", "jq", "amazon-cloudwatch-agent", "logrotate"]
    if ctx.runs_tessera:
        packages.append("postgresql15")  # psql, to apply Tessera's schema
    return {
        "package_update": False,
        "packages": packages,
        "write_files": [_write_file(path, mode, text) for path, (mode, text) in files.items()],
        "runcmd": [
            ["groupadd", "--system", "--force", "--gid", str(SERVICE_UID), SERVICE_USER],
            [
                "sh",
                "-c",
                f"id -u {SERVICE_USER} >/dev/null 2>&1 || useradd --system --uid {SERVICE_UID}"
                f" --gid {SERVICE_UID} --no-create-home --shell /sbin/nologin {SERVICE_USER}",
            ],
            ["systemd-tmpfiles", "--create", "/etc/tmpfiles.d/quorum-ha.conf"],
            ["systemctl", "daemon-reload"],
            ["systemctl", "enable", "--now", "docker.service"],
            [
                CLOUDWATCH_AGENT_CTL,
                "-a",
                "fetch-config",
                "-m",
                "ec2",
                "-s",
                "-c",
                f"file:{ETC_DIR}/cloudwatch-agent.json",
            ],
            # --no-block: the services wait for the volume and each other, not cloud-init.
            ["systemctl", "enable", "--now", "--no-block", *enabled_units(ctx)],
        ],
    }


def _dump(document: dict[str, Any]) -> str:
    return "#cloud-config\n" + yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=1000)


def render_user_data(ctx: NodeBootContext) -> str:
    """#cloud-config user data for an Amazon Linux 2023 x86_64 machine of any role and setup.

    Files are written as plain text; give EC2 `pack_user_data` of it (see there).
    """
    return _dump(cloud_config(ctx))


def render_packed_user_data(ctx: NodeBootContext) -> str:
    """render_user_data, packed for EC2 (pack_user_data) with the machine's DNS name."""
    return pack_user_data(render_user_data(ctx), machine=ctx.node_dns_name)
