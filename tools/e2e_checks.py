"""Checks the ephemeral stack test runs against a real deployment (boto3 + curl over SSM).

The NLB is internal by default, so HTTP checks run `curl` on one of the stack's own machines
through SSM Run Command (`SsmShell`); the same checks run here with `local_shell` when the NLB
is reachable, which is also how the tests drive them against servers on 127.0.0.1.

How the private path is proven without blocks: a random payload is stored through one Quorum
machine's `tm.ipc` (Q2T `POST /send` to the node's own key) and read back through another's
(`GET /transaction/{hash}`). Both machines share one Tessera key and one database, so the read
only succeeds when the key, the database and its JDBC driver and both machines' Q2T paths (the
IPC proxy of setups 2 and 3, Tessera's own socket in setup 1) all work.

How "a /partyinfo POST reaches every Tessera" is proven: each Tessera's own P2P `/metrics`
(Jersey's per-method request counters, `tessera_P2P_POST_partyInfo..._RequestCount`) is read on
its machine before and after one POST /partyinfo sent through the NLB, and every count must go
up. The proxy's mirror counters would only show that copies were *sent* (and per task, per
worker process); Tessera's own counter shows that each copy *arrived*, whatever routed it.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import shlex
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from domain.paths import TM_IPC_PATH
from node_bootstrap.proxy import RPC_PROTOCOLS

Sleep = Callable[[float], None]
Clock = Callable[[], float]

UPCHECK_BODY = "I'm up!"
# Any bytes will do: Tessera counts the call before it fails to parse the payload.
PROBE_PARTYINFO = b"quorum-ha e2e partyinfo probe"
# Jersey names the method "POST->partyInfo(byte[],List)#..." and Tessera's formatter turns that
# into tessera_P2P_POST_partyInfo_byte,List_RequestCount; GET /partyinfo is getPartyInfo.
PARTYINFO_POST_COUNT = re.compile(
    r"^tessera_P2P_(?:POST_)?partyInfo(?![A-Za-z])\S*_RequestCount\s+([0-9.eE+-]+)\s*$",
    re.MULTILINE,
)
PROXY_GATEWAY_ERRORS = (502, 503, 504)
# The workflow names the stack before the test runs, so its cleanup job can find it. Only e2e-*
# names: the settings treat them as non-production (deletable), and 40 characters keep every
# name derived from the stack within AWS's limits.
E2E_STACK_ENV = "QUORUM_HA_E2E_STACK"
E2E_STACK_NAME = re.compile(r"^e2e-[a-z0-9][a-z0-9-]{0,35}$")


class CheckError(AssertionError):
    """A check saw the deployment misbehave; the message says what and where."""


class Shell(Protocol):
    """Runs a bash script somewhere and returns its stdout (raises CheckError on failure)."""

    def __call__(self, script: str, *, timeout: float) -> str: ...


def local_shell(script: str, *, timeout: float) -> str:
    """Run the script on this machine."""
    try:
        done = subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise CheckError(f"script timed out after {timeout:g}s") from error
    if done.returncode != 0:
        raise CheckError(f"script exited {done.returncode}: {done.stderr.strip()[:500]}")
    return done.stdout


@dataclass
class SsmShell:
    """Run the script on an EC2 instance through SSM Run Command (AWS-RunShellScript)."""

    ssm: Any
    instance_id: str
    poll: float = 2.0
    sleep: Sleep = time.sleep
    clock: Clock = time.monotonic

    register_timeout: float = 600.0  # a fresh instance's agent takes a few minutes to register

    def _send(self, script: str, timeout: float) -> str:
        deadline = self.clock() + self.register_timeout
        while True:
            try:
                sent = self.ssm.send_command(
                    InstanceIds=[self.instance_id],
                    DocumentName="AWS-RunShellScript",
                    Parameters={
                        "commands": [script],
                        "executionTimeout": [str(int(timeout) + 30)],
                    },
                    TimeoutSeconds=max(30, int(timeout) + 30),
                    Comment="quorum-ha e2e check",
                )
                return str(sent["Command"]["CommandId"])
            except self.ssm.exceptions.InvalidInstanceId:
                if self.clock() > deadline:
                    raise CheckError(
                        f"{self.instance_id} never registered with SSM (agent, role, endpoints?)"
                    ) from None
                self.sleep(self.poll)

    def __call__(self, script: str, *, timeout: float) -> str:
        command_id = self._send(script, timeout)
        deadline = self.clock() + timeout + 60
        while True:
            try:
                answer = self.ssm.get_command_invocation(
                    CommandId=command_id, InstanceId=self.instance_id
                )
            except self.ssm.exceptions.InvocationDoesNotExist:
                answer = {"Status": "Pending"}  # not registered yet, right after sending
            status = answer["Status"]
            if status == "Success":
                return str(answer.get("StandardOutputContent", ""))
            if status in ("Failed", "Cancelled", "TimedOut", "Cancelling"):
                raise CheckError(
                    f"SSM command on {self.instance_id} {status}: "
                    f"{str(answer.get('StandardErrorContent', '')).strip()[:500]}"
                )
            if self.clock() > deadline:
                raise CheckError(f"SSM command on {self.instance_id} still {status}")
            self.sleep(self.poll)


# ---------------------------------------------------------------- when and with what to run


def e2e_skip_reason(
    environ: Mapping[str, str],
    pulumi_cli: str | None,
    credentials: object | None,
    docker_cli: str | None = None,
) -> str | None:
    """Why the ephemeral stack test must not run here, or None when it may."""
    if environ.get("QUORUM_HA_E2E") != "1":
        return "QUORUM_HA_E2E is not 1: the ephemeral stack test creates real AWS resources"
    if pulumi_cli is None:
        return "the pulumi CLI is not on PATH"
    if credentials is None:
        return "no AWS credentials resolve (boto3 found none in env, profile or role)"
    if docker_cli is None and not environ.get("QUORUM_HA_E2E_PROXY_IMAGE"):
        return "docker is not on PATH to build the proxy image (or set QUORUM_HA_E2E_PROXY_IMAGE)"
    return None


def ephemeral_stack_name(environ: Mapping[str, str]) -> str:
    """The stack's name: the one the workflow chose (QUORUM_HA_E2E_STACK), else a fresh one."""
    given = environ.get(E2E_STACK_ENV)
    if given is None:
        return f"e2e-{uuid.uuid4().hex[:8]}"
    if not E2E_STACK_NAME.match(given):
        raise ValueError(
            f"{E2E_STACK_ENV} is {given!r}; allowed: e2e- then 1-36 lowercase letters, digits "
            "or dashes (the ephemeral stack is never dev or prod)"
        )
    return given


def ephemeral_config(
    config: Mapping[str, Any], *, proxy_image: str | None = None
) -> dict[str, str]:
    """A stack file's config as `pulumi config set` text (structured values as JSON)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            raise ValueError(
                f"config {key!r} is encrypted for another stack; the ephemeral stack cannot "
                "copy it (leave it out of Pulumi.dev.yaml or set it on the stack yourself)"
            )
        out[key] = value if isinstance(value, str) else json.dumps(value)
    if proxy_image:
        # A prebuilt proxy image spares the runner a Docker build.
        out["quorum-ha:proxyImageUri"] = proxy_image
    return out


# ---------------------------------------------------------------- NLB targets


@dataclass(frozen=True)
class TargetState:
    target_group: str
    target: str
    port: int
    state: str
    reason: str = ""

    def __str__(self) -> str:
        why = f" ({self.reason})" if self.reason else ""
        return f"{self.target_group}: {self.target}:{self.port} {self.state}{why}"


def load_balancer_arn(elbv2: Any, dns_name: str) -> str:
    """The ARN of the load balancer with this DNS name (the stack exports the name)."""
    for page in elbv2.get_paginator("describe_load_balancers").paginate():
        for lb in page["LoadBalancers"]:
            if lb["DNSName"].lower() == dns_name.lower():
                return str(lb["LoadBalancerArn"])
    raise CheckError(f"no load balancer has the DNS name {dns_name}")


def target_states(elbv2: Any, lb_arn: str) -> dict[str, list[TargetState]]:
    """Every target group of the load balancer with the health of each registered target."""
    groups = elbv2.describe_target_groups(LoadBalancerArn=lb_arn)["TargetGroups"]
    states: dict[str, list[TargetState]] = {}
    for group in groups:
        name = group["TargetGroupName"]
        health = elbv2.describe_target_health(TargetGroupArn=group["TargetGroupArn"])
        states[name] = [
            TargetState(
                name,
                d["Target"]["Id"],
                int(d["Target"].get("Port", group.get("Port", 0))),
                d["TargetHealth"]["State"],
                d["TargetHealth"].get("Reason", ""),
            )
            for d in health["TargetHealthDescriptions"]
        ]
    return states


def wait_for_healthy_targets(
    elbv2: Any,
    lb_arn: str,
    *,
    timeout: float = 900.0,
    poll: float = 15.0,
    sleep: Sleep = time.sleep,
    clock: Clock = time.monotonic,
) -> dict[str, list[TargetState]]:
    """Wait until every target group has targets and all of them are healthy."""
    deadline = clock() + timeout
    while True:
        states = target_states(elbv2, lb_arn)
        if not states:
            raise CheckError(f"{lb_arn} has no target groups")
        waiting = [f"{name}: no targets registered" for name, ts in states.items() if not ts]
        waiting += [str(t) for ts in states.values() for t in ts if t.state != "healthy"]
        if not waiting:
            return states
        if clock() >= deadline:
            raise CheckError("targets not healthy in time: " + "; ".join(waiting))
        sleep(poll)


def instances_by_name(ec2: Any, names: Iterable[str]) -> dict[str, str]:
    """Running instance id per Name tag (the program tags each machine with its DNS name)."""
    wanted = list(names)
    found: dict[str, str] = {}
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[
            {"Name": "tag:Name", "Values": wanted},
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
    )
    for page in pages:
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
                found[tags["Name"]] = instance["InstanceId"]
    missing = [n for n in wanted if n not in found]
    if missing:
        raise CheckError(f"no running instance named {', '.join(missing)}")
    return found


# ---------------------------------------------------------------- HTTP through curl


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    body: bytes


def http_request(
    shell: Shell,
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    content_type: str | None = None,
    accept: str | None = None,
    unix_socket: str | None = None,
    timeout: float = 10.0,
) -> HttpAnswer:
    """One HTTP request made by curl where `shell` runs; status and body come back base64'd."""
    args = ["curl", "-sS", "-X", method, "--max-time", f"{timeout:g}", "-o", '"$out"']
    args += ["-w", "'%{http_code}'"]
    if unix_socket:
        args += ["--unix-socket", shlex.quote(unix_socket)]
    if content_type:
        args += ["-H", shlex.quote(f"Content-Type: {content_type}")]
    if accept:
        args += ["-H", shlex.quote(f"Accept: {accept}")]
    if body is not None:
        args += ["--data-binary", "@-"]
    command = " ".join([*args, shlex.quote(url)])
    if body is not None:
        encoded = base64.b64encode(body).decode()
        command = f"printf %s {encoded} | base64 -d | {command}"
    script = "\n".join(
        [
            "set -euo pipefail",
            "out=$(mktemp); trap 'rm -f \"$out\"' EXIT",
            f"code=$({command})",
            'printf "%s\\n" "$code"',
            'base64 -w0 "$out"',
        ]
    )
    output = shell(script, timeout=timeout + 15)
    first, _, rest = output.partition("\n")
    if not first.strip().isdigit():
        raise CheckError(f"{method} {url}: no HTTP status in {output[:200]!r}")
    return HttpAnswer(int(first), base64.b64decode(rest.strip() or b""))


def rpc_block_number(shell: Shell, rpc_url: str, *, timeout: float = 10.0) -> int:
    """eth_blockNumber through the RPC listener: Quorum answers with a hex block number."""
    request = {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}
    answer = http_request(
        shell,
        "POST",
        rpc_url,
        body=json.dumps(request).encode(),
        content_type="application/json",
        timeout=timeout,
    )
    if answer.status != 200:
        raise CheckError(f"eth_blockNumber via {rpc_url}: HTTP {answer.status}")
    try:
        reply = json.loads(answer.body)
        return int(reply["result"], 16)
    except (ValueError, KeyError, TypeError) as error:
        raise CheckError(f"eth_blockNumber via {rpc_url}: {answer.body[:200]!r}") from error


def wait_for_rpc_block_number(
    shell: Shell,
    rpc_url: str,
    *,
    attempts: int = 40,
    delay: float = 15.0,
    timeout: float = 900.0,
    request_timeout: float = 10.0,
    sleep: Sleep = time.sleep,
    clock: Clock = time.monotonic,
) -> int:
    """eth_blockNumber, retried: geth opens its RPC port only once Tessera answers on tm.ipc.

    Bounded three ways: at most `attempts` tries, `delay` seconds apart, within `timeout`.
    """
    start = clock()
    tries = 0
    while True:
        tries += 1
        try:
            return rpc_block_number(shell, rpc_url, timeout=request_timeout)
        except CheckError as error:
            last = error
        if tries >= attempts or clock() + delay > start + timeout:
            raise CheckError(
                f"eth_blockNumber via {rpc_url}: no answer after {tries} attempts "
                f"({clock() - start:g}s): {last}"
            ) from last
        sleep(delay)


def upcheck(shell: Shell, base_url: str, *, timeout: float = 10.0) -> None:
    """GET /upcheck answers 200 "I'm up!" (Tessera, through the third-party listener)."""
    url = base_url.rstrip("/") + "/upcheck"
    answer = http_request(shell, "GET", url, timeout=timeout)
    text = answer.body.decode(errors="replace").strip()
    if answer.status != 200 or text != UPCHECK_BODY:
        raise CheckError(f"GET {url}: HTTP {answer.status} {text[:100]!r}")


def partyinfo_post_count(shell: Shell, p2p_url: str, *, timeout: float = 10.0) -> float:
    """How many POST /partyinfo this Tessera has served (from its own P2P /metrics)."""
    url = p2p_url.rstrip("/") + "/metrics"
    # Filter where curl runs: the full metrics text can exceed what SSM returns.
    script = (
        f"set -o pipefail; curl -sS --fail --max-time {timeout:g} {shlex.quote(url)} "
        "| { grep -E '^tessera_P2P_(POST_)?partyInfo' || true; }"
    )
    text = shell(script, timeout=timeout + 15)
    values = PARTYINFO_POST_COUNT.findall(text)
    if not values:
        raise CheckError(f"{url}: no tessera_P2P_POST_partyInfo..._RequestCount metric")
    return sum(float(v) for v in values)


@dataclass(frozen=True)
class TesseraProbe:
    """Where to read one Tessera's counter: a shell on its machine and its own P2P URL."""

    shell: Shell
    p2p_url: str


def partyinfo_reaches_every_tessera(
    sender: Shell,
    nlb_p2p_url: str,
    tesseras: Mapping[str, TesseraProbe],
    *,
    timeout: float = 60.0,
    poll: float = 2.0,
    sleep: Sleep = time.sleep,
    clock: Clock = time.monotonic,
) -> dict[str, tuple[float, float]]:
    """POST /partyinfo once through the NLB; every Tessera's own counter must then go up.

    Returns each Tessera's (before, after). The mirror is asynchronous, so counters are polled.
    """
    before = {name: partyinfo_post_count(p.shell, p.p2p_url) for name, p in tesseras.items()}
    answer = http_request(
        sender,
        "POST",
        nlb_p2p_url.rstrip("/") + "/partyinfo",
        body=PROBE_PARTYINFO,
        content_type="application/octet-stream",
    )
    if answer.status in PROXY_GATEWAY_ERRORS:
        raise CheckError(f"POST /partyinfo via {nlb_p2p_url}: proxy answered {answer.status}")
    deadline = clock() + timeout
    after = dict(before)
    while True:
        for name, probe in tesseras.items():
            if after[name] <= before[name]:
                after[name] = partyinfo_post_count(probe.shell, probe.p2p_url)
        missed = sorted(name for name in tesseras if after[name] <= before[name])
        if not missed:
            return {name: (before[name], after[name]) for name in tesseras}
        if clock() >= deadline:
            raise CheckError(f"POST /partyinfo did not reach: {', '.join(missed)}")
        sleep(poll)


# ---------------------------------------------------------------- the private path (Q2T)


@dataclass(frozen=True)
class Q2TEndpoint:
    """A Tessera Q2T API as seen from one machine: its shell, and the socket (or URL) there."""

    shell: Shell
    base_url: str = "http://localhost"
    # What geth uses on every Quorum machine: Tessera's own socket or the IPC proxy's.
    unix_socket: str | None = TM_IPC_PATH

    def request(self, method: str, path: str, **kwargs: Any) -> HttpAnswer:
        url = self.base_url.rstrip("/") + path
        return http_request(self.shell, method, url, unix_socket=self.unix_socket, **kwargs)

    def __str__(self) -> str:
        return f"{self.base_url} on {self.unix_socket}" if self.unix_socket else self.base_url


def _json_field(answer: HttpAnswer, name: str, what: str) -> str:
    try:
        value = json.loads(answer.body)[name]
    except (ValueError, KeyError, TypeError) as error:
        raise CheckError(f"{what}: no {name!r} in {answer.body[:200]!r}") from error
    if not isinstance(value, str):
        raise CheckError(f"{what}: {name!r} is {value!r}")
    return value


def private_payload_round_trip(
    writer: Q2TEndpoint,
    readers: Mapping[str, Q2TEndpoint],
    public_key: str,
    *,
    timeout: float = 15.0,
) -> str:
    """Store a random payload through `writer` and read it back through every reader.

    Tessera 24.4's Q2T: POST /send {"payload", "to"} answers 201 {"key"}; GET
    /transaction/{key} (the base64 key URL-encoded) answers 200 {"payload", ...}
    (tessera-jaxrs q2t TransactionResource). Returns the key.
    """
    payload = b"quorum-ha e2e " + secrets.token_bytes(24)
    request = {"payload": base64.b64encode(payload).decode(), "to": [public_key]}
    sent = writer.request(
        "POST",
        "/send",
        body=json.dumps(request).encode(),
        content_type="application/json",
        accept="application/json",
        timeout=timeout,
    )
    what = f"POST /send via {writer}"
    if sent.status not in (200, 201):
        raise CheckError(f"{what}: HTTP {sent.status} {sent.body[:200]!r}")
    key = _json_field(sent, "key", what)
    path = "/transaction/" + urllib.parse.quote(key, safe="")
    for name, reader in readers.items():
        answer = reader.request("GET", path, accept="application/json", timeout=timeout)
        if answer.status != 200:
            raise CheckError(f"{name}: GET {path}: HTTP {answer.status} {answer.body[:200]!r}")
        encoded = _json_field(answer, "payload", f"{name}: GET {path}")
        if base64.b64decode(encoded) != payload:
            raise CheckError(f"{name}: read back a different payload for {key} via {reader}")
    return key


# ---------------------------------------------------------------- the failure drill
#
# Stop one process through SSM, watch the three endpoints keep answering and the matching alarm
# reach ALARM within its evaluation window, start the process again, see the alarm return to OK.

# systemd unit names: `name.service`, no path, no option, nothing a shell would expand.
UNIT_NAME = re.compile(r"^[A-Za-z0-9@_.:-]+\.service$")
# Longer than a unit's TimeoutStopSec (node_bootstrap/user_data.py: 120 s), so a slow
# `docker stop` is waited for, not reported as a failure.
UNIT_TIMEOUT = 180.0
# What CloudWatch adds to an alarm's own window before it changes state: the metric reaching
# CloudWatch (the agent scrapes each minute, EMF extraction, NLB/ECS publishing delay), the
# proxy's fall count before it marks a server down, and the alarm's evaluation schedule.
ALARM_MARGIN = 300.0
ALARM_STATES = ("OK", "ALARM", "INSUFFICIENT_DATA")


def _systemctl(shell: Shell, verb: str, unit: str, expect: tuple[str, ...], timeout: float) -> str:
    if not isinstance(unit, str) or not UNIT_NAME.match(unit):
        raise ValueError(f"unit is {unit!r}; allowed: a systemd unit name ending in .service")
    quoted = shlex.quote(unit)
    # `is-active` exits non-zero for inactive units: its word is what we read, not its status.
    script = f"set -eu\nsystemctl {verb} {quoted}\nsystemctl is-active {quoted} || true"
    output = shell(script, timeout=timeout).strip()
    state = output.splitlines()[-1].strip() if output else ""
    if state not in expect:
        raise CheckError(f"systemctl {verb} {unit}: unit is {state or 'unreported'!r} after it")
    return state


def stop_unit(shell: Shell, unit: str, *, timeout: float = UNIT_TIMEOUT) -> str:
    """`systemctl stop <unit>` on the machine; the unit must then be inactive.

    An explicit stop is not restarted by `Restart=always` (systemd.service(5): Restart= applies
    when the process exits, is killed or times out, not to a stop by systemctl).
    """
    return _systemctl(shell, "stop", unit, ("inactive", "failed"), timeout)


def start_unit(shell: Shell, unit: str, *, timeout: float = UNIT_TIMEOUT) -> str:
    """`systemctl start <unit>` on the machine; the unit must then be active (or activating)."""
    return _systemctl(shell, "start", unit, ("active", "activating"), timeout)


@dataclass(frozen=True)
class Endpoints:
    """The node's three client-facing endpoints, as the stack exports them."""

    rpc_url: str  # rpcEndpoint: JSON-RPC on 22000
    third_party_url: str  # thirdPartyUrl: Tessera third-party on 9081
    p2p_url: str  # p2pUrl: Tessera P2P on 9001


@dataclass
class EndpointTally:
    """How often each endpoint was asked and what failed (time since the watch began)."""

    asked: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def rounds(self) -> int:
        return min(self.asked.values(), default=0)


def endpoints_keep_answering(
    shell: Shell,
    endpoints: Endpoints,
    *,
    duration: float,
    interval: float = 2.0,
    request_timeout: float = 5.0,
    stop: threading.Event | None = None,
    sleep: Sleep = time.sleep,
    clock: Clock = time.monotonic,
) -> EndpointTally:
    """Ask the three endpoints, round after round, until `stop` is set or `duration` passed.

    Counts failures rather than raising: the drill reports every one (expected: none).
    """
    probes: dict[str, Callable[[], object]] = {
        "rpc": lambda: rpc_block_number(shell, endpoints.rpc_url, timeout=request_timeout),
        "third-party": lambda: upcheck(shell, endpoints.third_party_url, timeout=request_timeout),
        "p2p": lambda: upcheck(shell, endpoints.p2p_url, timeout=request_timeout),
    }
    tally = EndpointTally({name: 0 for name in probes})
    start = clock()
    while True:
        for name, probe in probes.items():
            tally.asked[name] += 1
            try:
                probe()
            except CheckError as error:
                tally.failures.append(f"{clock() - start:.1f}s {name}: {error}")
        if (stop is not None and stop.is_set()) or clock() - start >= duration:
            return tally
        sleep(interval)


@dataclass(frozen=True)
class AlarmMatch:
    """Which alarm: by the metric it reads and dimensions it names, or by its title.

    The metric is (namespace, name); an alarm on a metric math expression matches when one of
    its metrics does. The title is what follows `<name prefix>: ` in the alarm's name.
    """

    metric: tuple[str, str] | None = None
    dimensions: Mapping[str, str] = field(default_factory=dict)
    title: str | None = None

    def __post_init__(self) -> None:
        if self.metric is None and self.title is None:
            raise ValueError("an AlarmMatch needs a metric or a title")

    def matches(self, alarm: Mapping[str, Any], prefix: str) -> bool:
        if self.title is not None and alarm["AlarmName"] != f"{prefix}{self.title}":
            return False
        if self.metric is None:
            return True
        return any(self._metric_matches(metric) for metric in _alarm_metrics(alarm))

    def _metric_matches(self, metric: Mapping[str, Any]) -> bool:
        if (metric.get("Namespace"), metric.get("MetricName")) != self.metric:
            return False
        dims = {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}
        return all(dims.get(k) == v for k, v in self.dimensions.items())

    def __str__(self) -> str:
        if self.metric is None:
            return repr(self.title)
        dims = ", ".join(f"{k}={v}" for k, v in self.dimensions.items())
        return f"{'/'.join(self.metric)} {{{dims}}}"


def _alarm_metrics(alarm: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The metrics an alarm reads: its own, or each MetricStat of its metric math queries."""
    if alarm.get("MetricName"):
        return [alarm]
    return [q["MetricStat"]["Metric"] for q in alarm.get("Metrics", []) if "MetricStat" in q]


def evaluation_window(alarm: Mapping[str, Any]) -> float:
    """Period x evaluation periods, in seconds, read from the alarm (DescribeAlarms).

    A metric math alarm has no Period of its own: its queries' MetricStat periods say it.
    """
    periods = [alarm["Period"]] if alarm.get("Period") else []
    # MetricDataQuery has a Period of its own or in MetricStat (CloudWatch API reference, shapes
    # MetricAlarm and MetricDataQuery; botocore 1.44 cloudwatch model).
    for query in alarm.get("Metrics", []):
        periods += [
            p for p in (query.get("Period"), query.get("MetricStat", {}).get("Period")) if p
        ]
    if not periods:
        raise CheckError(f"alarm {alarm['AlarmName']!r} names no period")
    return float(max(periods) * int(alarm["EvaluationPeriods"]))


def matching_alarms(cloudwatch: Any, prefix: str, match: AlarmMatch) -> list[dict[str, Any]]:
    """Every metric alarm named under `prefix` that `match` picks (CloudWatch DescribeAlarms:
    AlarmNamePrefix, paginated; MetricAlarms carry Period, EvaluationPeriods, Metrics)."""
    pages = cloudwatch.get_paginator("describe_alarms").paginate(
        AlarmNamePrefix=prefix, AlarmTypes=["MetricAlarm"]
    )
    return [a for page in pages for a in page["MetricAlarms"] if match.matches(a, prefix)]


def matching_alarm(cloudwatch: Any, prefix: str, match: AlarmMatch) -> dict[str, Any]:
    """The one metric alarm named under `prefix` that `match` picks."""
    found = matching_alarms(cloudwatch, prefix, match)
    if len(found) != 1:
        names = ", ".join(repr(a["AlarmName"]) for a in found) or "none"
        raise CheckError(f"{len(found)} alarms under {prefix!r} match {match}: {names}")
    return found[0]


def alarms_not_firing(cloudwatch: Any, prefix: str, matches: Sequence[AlarmMatch]) -> list[str]:
    """Names of the alarms the matches pick, each of which must not be in ALARM; a match that
    picks none is an error (it would prove nothing)."""
    calm = []
    for match in matches:
        found = matching_alarms(cloudwatch, prefix, match)
        if not found:
            raise CheckError(f"no alarm under {prefix!r} matches {match}")
        firing = [a["AlarmName"] for a in found if a["StateValue"] == "ALARM"]
        if firing:
            raise CheckError(
                f"{', '.join(firing)} in ALARM: the failure reached the clients' side"
            )
        calm += [a["AlarmName"] for a in found]
    return calm


def wait_for_alarm_state(
    cloudwatch: Any,
    prefix: str,
    match: AlarmMatch,
    state: str,
    *,
    since: float | None = None,
    timeout: float | None = None,
    margin: float = ALARM_MARGIN,
    poll: float = 15.0,
    sleep: Sleep = time.sleep,
    clock: Clock = time.monotonic,
) -> tuple[dict[str, Any], float]:
    """Poll the alarm until its StateValue is `state`; returns it and the seconds it took.

    Bounded by `timeout`, by default the alarm's evaluation window plus `margin`, counted from
    `since` (when the failure began, a `clock()` value) or from now.
    """
    if state not in ALARM_STATES:
        raise ValueError(f"state is {state!r}; allowed: {', '.join(ALARM_STATES)}")
    start = clock() if since is None else since
    alarm = matching_alarm(cloudwatch, prefix, match)
    limit = evaluation_window(alarm) + margin if timeout is None else timeout
    while True:
        if alarm["StateValue"] == state:
            return alarm, clock() - start
        if clock() - start >= limit:
            raise CheckError(
                f"alarm {alarm['AlarmName']!r} is {alarm['StateValue']}, not {state}, after "
                f"{clock() - start:g}s (limit {limit:g}s): {alarm.get('StateReason', '')}"
            )
        sleep(poll)
        alarm = matching_alarm(cloudwatch, prefix, match)


def upstream_servers_on(config: Mapping[str, Any], host: str) -> list[tuple[str, str]]:
    """(upstream, server) of every upstream server of the proxy config on this host."""
    return [
        (name, server)
        for name, upstream in config["upstreams"].items()
        for server in upstream["servers"]
        if server.rsplit(":", 1)[0] == host
    ]


def rpc_upstream(config: Mapping[str, Any]) -> str:
    """The upstream behind the proxy's RPC listener (jsonrpc or tcp): the Quorum servers."""
    for listener in config["listeners"]:
        if listener.get("protocol") in RPC_PROTOCOLS:
            return str(listener["upstream"])
    raise CheckError("the proxy config has no jsonrpc or tcp listener (the RPC one)")


def primary_quorum(config: Mapping[str, Any]) -> str:
    """The host the standalone proxy sends RPC to while it is healthy: the first server of the
    RPC upstream (node_bootstrap/proxy.py: the first healthy node is primary)."""
    server: str = config["upstreams"][rpc_upstream(config)]["servers"][0]
    return server.rsplit(":", 1)[0]


@dataclass(frozen=True)
class DrillStep:
    """One failure: which unit to stop on which machine, and the alarms it must raise."""

    name: str
    machine: Shell
    unit: str
    alarms: Sequence[AlarmMatch]  # each must reach ALARM, then OK
    # Must not be in ALARM while those are (e.g. the NLB target groups: the proxy hides it).
    calm: Sequence[AlarmMatch] = ()


@dataclass
class DrillResult:
    step: str
    to_alarm: dict[str, float]  # alarm name -> seconds from the stop to ALARM
    to_ok: dict[str, float]  # alarm name -> seconds from the start to OK
    answers: EndpointTally
    calm: list[str] = field(default_factory=list)  # alarms seen not firing during the failure


def failure_drill(
    step: DrillStep,
    *,
    cloudwatch: Any,
    alarm_prefix: str,
    client: Shell,
    endpoints: Endpoints,
    margin: float = ALARM_MARGIN,
    alarm_poll: float = 15.0,
    watch_interval: float = 2.0,
    watch_limit: float = 3600.0,
    unit_timeout: float = UNIT_TIMEOUT,
    sleep: Sleep = time.sleep,
    clock: Clock = time.monotonic,
) -> DrillResult:
    """Stop the unit, see the endpoints keep answering and each alarm reach ALARM (and the calm
    ones not), start it, see each alarm return to OK. The unit is started again whatever
    fails; raises CheckError naming every failed answer or alarm. The endpoints are watched
    from `client` in real time."""
    if not step.alarms:
        raise ValueError(f"drill step {step.name!r} names no alarm to watch")

    def wait(match: AlarmMatch, state: str, since: float | None = None) -> tuple[str, float]:
        alarm, took = wait_for_alarm_state(
            cloudwatch,
            alarm_prefix,
            match,
            state,
            since=since,
            margin=margin,
            poll=alarm_poll,
            sleep=sleep,
            clock=clock,
        )
        return str(alarm["AlarmName"]), took

    # A drill proves nothing from an alarm already firing (or still without data).
    calm_since = clock()
    for match in step.alarms:
        wait(match, "OK", since=calm_since)
    done = threading.Event()
    outcome: list[EndpointTally | BaseException] = []

    def watch_endpoints() -> None:
        try:
            outcome.append(
                endpoints_keep_answering(
                    client, endpoints, duration=watch_limit, interval=watch_interval, stop=done
                )
            )
        except BaseException as error:  # reported by the drill, not lost with the thread
            outcome.append(error)

    watcher = threading.Thread(target=watch_endpoints, name=f"drill: {step.name}", daemon=True)
    watcher.start()
    result = DrillResult(step.name, {}, {}, EndpointTally())
    try:
        stopped = clock()
        try:
            stop_unit(step.machine, step.unit, timeout=unit_timeout)
            for match in step.alarms:
                name, took = wait(match, "ALARM", since=stopped)
                result.to_alarm[name] = took
            result.calm = alarms_not_firing(cloudwatch, alarm_prefix, step.calm)
        finally:
            started = clock()
            start_unit(step.machine, step.unit, timeout=unit_timeout)
        for match in step.alarms:
            name, took = wait(match, "OK", since=started)
            result.to_ok[name] = took
    finally:
        done.set()
        watcher.join()
    [answers] = outcome
    if isinstance(answers, BaseException):
        raise CheckError(f"{step.name}: watching the endpoints failed: {answers}") from answers
    result.answers = answers
    if answers.failures:
        raise CheckError(
            f"{step.name}: {len(answers.failures)} of {sum(answers.asked.values())} answers "
            "failed during the drill: " + "; ".join(answers.failures[:10])
        )
    return result
