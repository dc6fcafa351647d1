"""`quorum-ha:alarms`: where alarms notify and when they fire (components/monitoring.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from components.settings.raw import Raw
from domain.errors import ConfigError
from domain.validation import is_shell_safe

KEYS = ("alarms",)
# An SNS standard topic (CloudWatch alarm actions and RDS event subscriptions take no FIFO
# topic: SNS developer guide, "FIFO topic ... subscription protocols").
_SNS_TOPIC_ARN = re.compile(
    r"^arn:aws(-us-gov)?:sns:(?P<region>[a-z0-9-]+):\d{12}:(?P<name>[A-Za-z0-9_-]{1,256})$"
)
_EMAIL = re.compile(r"^[^@]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")  # and shell-safe


@dataclass(frozen=True, kw_only=True)
class AlarmSettings:
    """Where alarms notify and when they fire (`quorum-ha:alarms`); defaults suit dev and prod.

    Rates are counts per ALARM_RATE_MINUTES window, summed over the proxy's tasks.
    """

    # An existing SNS topic, or addresses subscribed to one the stack creates (neither: the
    # stack creates a topic without subscriptions, for the operator to subscribe to).
    topic_arn: str | None = None
    emails: tuple[str, ...] = ()
    upstream_failures: int = 10  # failed attempts on one upstream server
    retries: int = 20  # requests sent again to another server, per listener
    mirror_failures: int = 10  # /partyinfo copies that did not reach a Tessera
    server_errors: int = 5  # 502/503/504 answered to clients, per listener
    chain_stall_minutes: int = 3  # chain head not moving for this long
    block_lag: int = 10  # one HA Quorum this many blocks behind another
    min_peers: int | None = None  # None: what the network config implies
    party_divergence_minutes: int = 10  # Tessera party counts differing for this long
    db_cpu_percent: int = 80
    db_free_storage_gib: int | None = None  # None: a tenth of dbAllocatedStorage
    db_connections: int = 400
    replica_lag_seconds: int = 300


ALARM_RATE_MINUTES = 5
_ALARM_INTS: dict[str, tuple[str, int, int]] = {
    # config key -> (field, minimum, maximum)
    "upstreamFailures": ("upstream_failures", 1, 1_000_000),
    "retries": ("retries", 1, 1_000_000),
    "mirrorFailures": ("mirror_failures", 1, 1_000_000),
    "serverErrors": ("server_errors", 1, 1_000_000),
    "chainStallMinutes": ("chain_stall_minutes", 1, 60),
    "blockLag": ("block_lag", 1, 1_000_000),
    "minPeers": ("min_peers", 0, 1000),
    "partyDivergenceMinutes": ("party_divergence_minutes", 1, 1440),
    "dbCpuPercent": ("db_cpu_percent", 1, 100),
    "dbFreeStorageGib": ("db_free_storage_gib", 1, 65536),
    "dbConnections": ("db_connections", 1, 100_000),
    "replicaLagSeconds": ("replica_lag_seconds", 1, 86_400),
}


def parse(raw: Raw, region: str) -> AlarmSettings:
    key = raw.key("alarms")
    value = raw.parsed("alarms")
    if value is None:
        return AlarmSettings()
    if not isinstance(value, dict):
        raise ConfigError(key, value, "an object with topicArn or emails, and thresholds")
    known = {"topicArn", "emails", *_ALARM_INTS}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", value[unknown[0]], f"keys {sorted(known)}")
    topic_arn = value.get("topicArn")
    if topic_arn is not None:
        match = _SNS_TOPIC_ARN.match(topic_arn) if isinstance(topic_arn, str) else None
        if match is None:
            raise ConfigError(
                f"{key}.topicArn",
                topic_arn,
                "an SNS standard topic ARN, arn:aws:sns:<region>:<account>:<name> (no .fifo)",
            )
        if match["region"] != region:
            # PutMetricAlarm: an SNS action must be a topic of the alarm's own region.
            raise ConfigError(f"{key}.topicArn", topic_arn, f"a topic in {region}, the stack's")
    emails = value.get("emails", [])
    if not isinstance(emails, list) or not all(isinstance(e, str) for e in emails):
        raise ConfigError(f"{key}.emails", emails, "a list of email addresses")
    for i, email in enumerate(emails):
        if not _EMAIL.match(email) or not is_shell_safe(email) or len(email) > 254:
            raise ConfigError(f"{key}.emails[{i}]", email, "an email address such as ops@x.org")
    if topic_arn is not None and emails:
        raise ConfigError(
            f"{key}.emails",
            emails,
            "unset when topicArn is set (subscribe the addresses to that topic yourself)",
        )
    thresholds: dict[str, int] = {}
    for name, (field_name, low, high) in _ALARM_INTS.items():
        if name not in value:
            continue
        number = value[name]
        if isinstance(number, bool) or not isinstance(number, int) or not low <= number <= high:
            raise ConfigError(f"{key}.{name}", number, f"an integer {low} to {high}")
        thresholds[field_name] = number
    return AlarmSettings(topic_arn=topic_arn, emails=tuple(emails), **thresholds)
