"""The ephemeral stack test's checks: boto3 ones against moto, HTTP ones against 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import socket
import socketserver
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from domain.paths import TM_IPC_PATH
from node_bootstrap.proxy import standalone_proxy_config
from node_bootstrap.user_data import QUORUM_UNIT, TESSERA_UNIT
from tools import e2e_checks as checks
from tools.e2e_checks import CheckError, TesseraProbe, local_shell

REGION = "us-east-1"

# ---------------------------------------------------------------- moto: NLB targets, instances


@pytest.fixture
def aws() -> Iterator[dict[str, Any]]:
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnets = [
            ec2.create_subnet(
                VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{REGION}{z}"
            )["Subnet"]["SubnetId"]
            for i, z in enumerate("ab")
        ]
        elbv2 = boto3.client("elbv2", region_name=REGION)
        lb = elbv2.create_load_balancer(
            Name="qha-e2e-nlb", Subnets=subnets, Scheme="internal", Type="network"
        )["LoadBalancers"][0]
        yield {"ec2": ec2, "elbv2": elbv2, "vpc": vpc, "subnets": subnets, "lb": lb}


def target_group(aws: dict[str, Any], name: str, port: int, kind: str = "ip") -> str:
    group = aws["elbv2"].create_target_group(
        Name=name, Protocol="TCP", Port=port, VpcId=aws["vpc"], TargetType=kind
    )["TargetGroups"][0]
    arn = group["TargetGroupArn"]
    aws["elbv2"].create_listener(
        LoadBalancerArn=aws["lb"]["LoadBalancerArn"],
        Protocol="TCP",
        Port=port,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": arn}],
    )
    return str(arn)


class FakeTime:
    """A clock that advances only when the code under test sleeps."""

    def __init__(self, on_sleep: Callable[[int], None] | None = None) -> None:
        self.now = 0.0
        self.sleeps = 0
        self.on_sleep = on_sleep

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.sleeps += 1
        if self.on_sleep:
            self.on_sleep(self.sleeps)


def test_the_nlb_is_found_by_the_dns_name_the_stack_exports(aws: dict[str, Any]) -> None:
    dns = aws["lb"]["DNSName"]
    assert checks.load_balancer_arn(aws["elbv2"], dns.upper()) == aws["lb"]["LoadBalancerArn"]
    with pytest.raises(CheckError, match="no load balancer has the DNS name nope"):
        checks.load_balancer_arn(aws["elbv2"], "nope")


def test_registered_targets_of_every_listener_are_healthy(aws: dict[str, Any]) -> None:
    for port, ip in ((22000, "10.0.0.10"), (9081, "10.0.1.10"), (9001, "10.0.0.11")):
        arn = target_group(aws, f"qha-{port}", port)
        aws["elbv2"].register_targets(TargetGroupArn=arn, Targets=[{"Id": ip, "Port": port}])
    time = FakeTime()
    states = checks.wait_for_healthy_targets(
        aws["elbv2"], aws["lb"]["LoadBalancerArn"], sleep=time.sleep, clock=time.clock
    )
    assert sorted(states) == ["qha-22000", "qha-9001", "qha-9081"]
    assert [str(t) for t in states["qha-9081"]] == ["qha-9081: 10.0.1.10:9081 healthy"]
    assert time.sleeps == 0


def test_waiting_ends_when_a_stopped_target_comes_back(aws: dict[str, Any]) -> None:
    ec2 = aws["ec2"]
    instance = ec2.run_instances(
        ImageId="ami-12c6146b", MinCount=1, MaxCount=1, SubnetId=aws["subnets"][0]
    )["Instances"][0]["InstanceId"]
    arn = target_group(aws, "qha-rpc", 22000, kind="instance")
    aws["elbv2"].register_targets(TargetGroupArn=arn, Targets=[{"Id": instance, "Port": 22000}])
    ec2.stop_instances(InstanceIds=[instance])

    def start_on_second_sleep(count: int) -> None:
        if count == 2:
            ec2.start_instances(InstanceIds=[instance])

    time = FakeTime(start_on_second_sleep)
    states = checks.wait_for_healthy_targets(
        aws["elbv2"], aws["lb"]["LoadBalancerArn"], poll=5, sleep=time.sleep, clock=time.clock
    )
    assert states["qha-rpc"][0].state == "healthy"
    assert time.sleeps == 2


def test_a_group_without_targets_times_out_naming_it(aws: dict[str, Any]) -> None:
    healthy = target_group(aws, "qha-p2p", 9001)
    aws["elbv2"].register_targets(TargetGroupArn=healthy, Targets=[{"Id": "10.0.0.5"}])
    target_group(aws, "qha-third-party", 9081)
    time = FakeTime()
    with pytest.raises(CheckError, match=r"qha-third-party: no targets registered$"):
        checks.wait_for_healthy_targets(
            aws["elbv2"],
            aws["lb"]["LoadBalancerArn"],
            timeout=60,
            poll=15,
            sleep=time.sleep,
            clock=time.clock,
        )
    assert time.sleeps == 4


def test_machines_are_found_by_their_name_tag(aws: dict[str, Any]) -> None:
    ec2 = aws["ec2"]
    ids = {}
    for name in ("tessera-0.dev.quorum-ha.internal", "tessera-1.dev.quorum-ha.internal"):
        ids[name] = ec2.run_instances(
            ImageId="ami-12c6146b",
            MinCount=1,
            MaxCount=1,
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": name}]}
            ],
        )["Instances"][0]["InstanceId"]
    assert checks.instances_by_name(ec2, ids) == ids
    with pytest.raises(CheckError, match="no running instance named quorum-0"):
        checks.instances_by_name(ec2, [*ids, "quorum-0"])


def test_ssm_shell_sends_the_script_and_returns_its_output(aws: dict[str, Any]) -> None:
    instance = aws["ec2"].run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)[
        "Instances"
    ][0]["InstanceId"]
    ssm = boto3.client("ssm", region_name=REGION)
    shell = checks.SsmShell(ssm, instance, sleep=lambda _: None)
    assert shell("echo hello", timeout=10) == ""  # moto runs nothing and prints nothing
    [command] = ssm.list_commands(InstanceId=instance)["Commands"]
    assert command["DocumentName"] == "AWS-RunShellScript"
    assert command["Parameters"]["commands"] == ["echo hello"]


# ---------------------------------------------------------------- local servers: HTTP checks


@dataclass
class FakeTessera:
    """Answers like Tessera: /upcheck, P2P /metrics counters, POST /partyinfo (500 on junk)."""

    posts: int = 0
    bodies: list[bytes] = field(default_factory=list)


@dataclass
class FakeProxy:
    """The NLB + proxy: POST /partyinfo to the first Tessera, copies to the others if mirroring."""

    tesseras: list[str]
    mirror: bool = True


def _handler(tessera: FakeTessera | None, proxy: FakeProxy | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return

        def reply(self, status: int, body: bytes, kind: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/upcheck":
                self.reply(200, b"I'm up!")
            elif self.path == "/metrics" and tessera is not None:
                lines = [
                    f"tessera_P2P_POST_partyInfo_byte,List_RequestCount {tessera.posts}",
                    "tessera_P2P_POST_partyInfo_byte,List_AverageTime[ms] 3",
                    "tessera_P2P_GET_getPartyInfo_RequestCount 41",
                    "tessera_P2P_POST_validate_byte_RequestCount 17",
                    "tessera_Q2T_POST_send_SendRequest_RequestCount 9",
                ]
                self.reply(200, ("\n".join(lines) + "\n").encode())
            else:
                self.reply(404, b"not found")

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path == "/partyinfo" and tessera is not None:
                tessera.posts += 1
                tessera.bodies.append(body)
                self.reply(500, b"could not parse partyinfo")
            elif self.path == "/partyinfo" and proxy is not None:
                targets = proxy.tesseras if proxy.mirror else proxy.tesseras[:1]
                status = 0
                for i, url in enumerate(targets):
                    request = urllib.request.Request(  # noqa: S310 - http to 127.0.0.1
                        url + "/partyinfo", data=body, method="POST"
                    )
                    try:
                        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
                            code = answer.status
                    except urllib.error.HTTPError as error:
                        code = error.code
                    status = code if i == 0 else status
                self.reply(status, b"")
            elif self.path == "/" and json.loads(body).get("method") == "eth_blockNumber":
                self.reply(200, b'{"jsonrpc":"2.0","id":1,"result":"0x1b4"}', "application/json")
            else:
                self.reply(404, b"not found")

    return Handler


@pytest.fixture
def serve() -> Iterator[Callable[..., str]]:
    servers: list[ThreadingHTTPServer] = []

    def start(tessera: FakeTessera | None = None, proxy: FakeProxy | None = None) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(tessera, proxy))
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    try:
        yield start
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


@pytest.fixture
def serve_at() -> Iterator[Callable[[int], None]]:
    """Start the fake listener on a given port, later (a process that comes up)."""
    servers: list[ThreadingHTTPServer] = []

    def start(port: int) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", port), _handler(None, None))
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)

    try:
        yield start
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


@pytest.fixture
def serve_q2t_tcp() -> Iterator[Callable[[FakeQ2T], str]]:
    """A Tessera's Q2T on a TCP port (setups 2 and 3 listen on one for the IPC proxy)."""
    servers: list[ThreadingHTTPServer] = []

    def start(q2t: FakeQ2T) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _q2t_handler(q2t))
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    try:
        yield start
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_rpc_block_number_through_the_listener(serve: Callable[..., str]) -> None:
    assert checks.rpc_block_number(local_shell, serve() + "/") == 0x1B4


def test_rpc_failure_names_the_url(serve: Callable[..., str]) -> None:
    url = serve() + "/nope"
    with pytest.raises(CheckError, match=f"eth_blockNumber via {url}: HTTP 404"):
        checks.rpc_block_number(local_shell, url)


def test_upcheck_through_the_third_party_listener(serve: Callable[..., str]) -> None:
    checks.upcheck(local_shell, serve(FakeTessera()))


def test_an_unreachable_listener_fails_the_check(serve: Callable[..., str]) -> None:
    url = serve()
    closed = url.rsplit(":", 1)[0] + ":1"
    with pytest.raises(CheckError, match="script exited 7"):
        checks.upcheck(local_shell, closed)


def test_the_partyinfo_counter_reads_only_post_partyinfo(serve: Callable[..., str]) -> None:
    tessera = FakeTessera(posts=5)
    assert checks.partyinfo_post_count(local_shell, serve(tessera)) == 5


def test_a_mirrored_partyinfo_reaches_every_tessera(serve: Callable[..., str]) -> None:
    tesseras = [FakeTessera(posts=2), FakeTessera(), FakeTessera(posts=7)]
    urls = [serve(t) for t in tesseras]
    nlb = serve(proxy=FakeProxy(urls))
    probes = {f"tessera-{i}": TesseraProbe(local_shell, u) for i, u in enumerate(urls)}
    seen = checks.partyinfo_reaches_every_tessera(local_shell, nlb, probes, sleep=lambda _: None)
    assert seen == {"tessera-0": (2, 3), "tessera-1": (0, 1), "tessera-2": (7, 8)}
    assert all(t.bodies == [checks.PROBE_PARTYINFO] for t in tesseras)


def test_a_partyinfo_that_reaches_one_tessera_names_the_others(serve: Callable[..., str]) -> None:
    tesseras = [FakeTessera(), FakeTessera()]
    urls = [serve(t) for t in tesseras]
    nlb = serve(proxy=FakeProxy(urls, mirror=False))
    probes = {f"tessera-{i}": TesseraProbe(local_shell, u) for i, u in enumerate(urls)}
    time = FakeTime()
    with pytest.raises(CheckError, match=r"POST /partyinfo did not reach: tessera-1$"):
        checks.partyinfo_reaches_every_tessera(
            local_shell, nlb, probes, timeout=6, poll=2, sleep=time.sleep, clock=time.clock
        )
    assert [t.posts for t in tesseras] == [1, 0]


def test_a_tessera_without_the_metric_is_reported(serve: Callable[..., str]) -> None:
    url = serve()  # answers 404 on /metrics: curl --fail makes the script fail
    with pytest.raises(CheckError, match="script exited 22"):
        checks.partyinfo_post_count(local_shell, url)


# ---------------------------------------------------------------- gate and config of the e2e test


ASKED = {"QUORUM_HA_E2E": "1"}
CLI, DOCKER = "/usr/bin/pulumi", "/usr/bin/docker"


@pytest.mark.parametrize(
    ("environ", "cli", "credentials", "docker", "reason"),
    [
        ({}, CLI, object(), DOCKER, "QUORUM_HA_E2E is not 1"),
        ({"QUORUM_HA_E2E": "yes"}, CLI, object(), DOCKER, "QUORUM_HA_E2E is not 1"),
        (ASKED, None, object(), DOCKER, "the pulumi CLI is not on PATH"),
        (ASKED, CLI, None, DOCKER, "no AWS credentials resolve"),
        (ASKED, CLI, object(), None, "docker is not on PATH"),
    ],
)
def test_the_e2e_test_says_why_it_does_not_run(
    environ: dict[str, str],
    cli: str | None,
    credentials: object | None,
    docker: str | None,
    reason: str,
) -> None:
    found = checks.e2e_skip_reason(environ, cli, credentials, docker)
    assert found is not None and found.startswith(reason)


def test_the_e2e_test_runs_when_asked_with_cli_credentials_and_an_image_source() -> None:
    assert checks.e2e_skip_reason(ASKED, CLI, object(), DOCKER) is None
    prebuilt = {**ASKED, "QUORUM_HA_E2E_PROXY_IMAGE": "r/proxy:1"}
    assert checks.e2e_skip_reason(prebuilt, CLI, object(), None) is None


def test_the_dev_config_is_copied_as_config_text() -> None:
    config = {
        "aws:region": "us-east-1",
        "quorum-ha:quorumNodes": 2,
        "quorum-ha:deletionProtection": False,
        "quorum-ha:tags": {"environment": "dev"},
    }
    assert checks.ephemeral_config(config, proxy_image="r/proxy:1") == {
        "aws:region": "us-east-1",
        "quorum-ha:quorumNodes": "2",
        "quorum-ha:deletionProtection": "false",
        "quorum-ha:tags": '{"environment": "dev"}',
        "quorum-ha:proxyImageUri": "r/proxy:1",
    }
    with pytest.raises(ValueError, match="'quorum-ha:dbPassword' is encrypted"):
        checks.ephemeral_config({"quorum-ha:dbPassword": {"secure": "v1:x"}})


# ---------------------------------------------------------------- the stack's name


def test_the_stack_name_comes_from_the_workflow_when_it_sets_one() -> None:
    assert checks.ephemeral_stack_name({"QUORUM_HA_E2E_STACK": "e2e-4242"}) == "e2e-4242"


def test_without_a_name_the_stack_gets_a_fresh_e2e_one() -> None:
    first, second = checks.ephemeral_stack_name({}), checks.ephemeral_stack_name({})
    assert re.fullmatch(r"e2e-[0-9a-f]{8}", first) and first != second


@pytest.mark.parametrize("bad", ["prod", "dev-x", "e2e-", "E2E-1", "e2e-1/x", "e2e-" + "1" * 40])
def test_a_name_outside_e2e_is_refused_naming_the_variable(bad: str) -> None:
    with pytest.raises(ValueError, match=rf"QUORUM_HA_E2E_STACK is '{re.escape(bad)}'.*e2e-"):
        checks.ephemeral_stack_name({"QUORUM_HA_E2E_STACK": bad})


# ---------------------------------------------------------------- JSON-RPC, polled


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_json_rpc_is_polled_until_geth_listens(serve_at: Callable[[int], None]) -> None:
    port = free_port()  # nothing listens yet: geth waits for Tessera before opening 22000

    def geth_starts_on_second_sleep(count: int) -> None:
        if count == 2:
            serve_at(port)

    time = FakeTime(geth_starts_on_second_sleep)
    block = checks.wait_for_rpc_block_number(
        local_shell, f"http://127.0.0.1:{port}/", delay=5, sleep=time.sleep, clock=time.clock
    )
    assert block == 0x1B4
    assert time.sleeps == 2


def test_json_rpc_polling_gives_up_after_its_attempts(serve: Callable[..., str]) -> None:
    url = serve() + "/nope"
    time = FakeTime()
    with pytest.raises(CheckError, match=r"no answer after 3 attempts .*HTTP 404"):
        checks.wait_for_rpc_block_number(
            local_shell, url, attempts=3, delay=5, timeout=600, sleep=time.sleep, clock=time.clock
        )
    assert time.sleeps == 2


def test_json_rpc_polling_gives_up_at_its_deadline(serve: Callable[..., str]) -> None:
    url = serve() + "/nope"
    time = FakeTime()
    with pytest.raises(CheckError, match=r"no answer after 3 attempts \(20s\)"):
        checks.wait_for_rpc_block_number(
            local_shell, url, attempts=50, delay=10, timeout=20, sleep=time.sleep, clock=time.clock
        )
    assert time.now <= 20


# ---------------------------------------------------------------- the private path (Q2T)

OWN_KEY = "BULeR8JyUWhiuuCMU/HLA0Q5pzkYT+cHII3ZKBey3Bo="


@dataclass
class FakeQ2T:
    """Tessera's Q2T on a unix socket: POST /send stores, GET /transaction/{hash} reads back.

    Two servers sharing one `store` are two Tesseras sharing a database and a key.
    """

    store: dict[str, bytes] = field(default_factory=dict)
    tamper: bool = False
    sends: list[dict[str, Any]] = field(default_factory=list)


def _q2t_handler(q2t: FakeQ2T) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return

        def address_string(self) -> str:
            return "unix"

        def reply(self, status: int, document: dict[str, Any] | str) -> None:
            body = (json.dumps(document) if isinstance(document, dict) else document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path != "/send" or self.headers["Content-Type"] != "application/json":
                self.reply(415, "Unsupported Media Type")
                return
            request = json.loads(body)
            q2t.sends.append(request)
            # Tessera's hashes are base64 with '+' and '/': the reader must URL-encode them.
            key = base64.b64encode(b"\xfb\xff" + hashlib.sha512(body).digest()[:62]).decode()
            q2t.store[key] = base64.b64decode(request["payload"])
            self.reply(201, {"key": key})

        def do_GET(self) -> None:
            prefix = "/transaction/"
            path, _, _query = self.path.partition("?")
            raw = path[len(prefix) :]
            if not path.startswith(prefix) or "/" in raw:
                self.reply(404, "Not Found")
                return
            key = urllib.parse.unquote(raw)
            if key not in q2t.store:
                self.reply(404, f"Message with hash {key} was not found")
                return
            payload = q2t.store[key] + (b"!" if q2t.tamper else b"")
            document = {"payload": base64.b64encode(payload).decode(), "privacyFlag": 0}
            self.reply(200, document)

    return Handler


class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def q2t_socket(tmp_path: Path) -> Iterator[Callable[[FakeQ2T], str]]:
    servers: list[UnixHTTPServer] = []

    def start(q2t: FakeQ2T) -> str:
        path = str(tmp_path / f"tm-{len(servers)}.ipc")
        server = UnixHTTPServer(path, _q2t_handler(q2t))
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return path

    try:
        yield start
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_the_tm_ipc_path_is_the_one_the_machines_use() -> None:
    assert checks.Q2TEndpoint(local_shell).unix_socket == TM_IPC_PATH


def test_a_payload_stored_through_one_machine_is_read_through_the_other(
    q2t_socket: Callable[[FakeQ2T], str],
) -> None:
    shared = FakeQ2T()
    one = checks.Q2TEndpoint(local_shell, unix_socket=q2t_socket(shared))
    other = checks.Q2TEndpoint(local_shell, unix_socket=q2t_socket(FakeQ2T(store=shared.store)))
    key = checks.private_payload_round_trip(one, {"quorum-1": other}, OWN_KEY)
    [sent] = shared.sends
    assert sent["to"] == [OWN_KEY]
    assert key in shared.store and "+" in key and "/" in key
    assert len(base64.b64decode(sent["payload"])) >= 16  # a fresh random payload


def test_a_reader_without_the_shared_database_is_named(
    q2t_socket: Callable[[FakeQ2T], str],
) -> None:
    one = checks.Q2TEndpoint(local_shell, unix_socket=q2t_socket(FakeQ2T()))
    alone = checks.Q2TEndpoint(local_shell, unix_socket=q2t_socket(FakeQ2T()))
    with pytest.raises(CheckError, match=r"^quorum-1: GET /transaction/\S+: HTTP 404 .*not found"):
        checks.private_payload_round_trip(one, {"quorum-1": alone}, OWN_KEY)


def test_a_reader_returning_another_payload_is_named(q2t_socket: Callable[[FakeQ2T], str]) -> None:
    shared = FakeQ2T()
    one = checks.Q2TEndpoint(local_shell, unix_socket=q2t_socket(shared))
    wrong = FakeQ2T(store=shared.store, tamper=True)
    other = checks.Q2TEndpoint(local_shell, unix_socket=q2t_socket(wrong))
    with pytest.raises(CheckError, match=r"^quorum-1: read back a different payload"):
        checks.private_payload_round_trip(one, {"quorum-1": other}, OWN_KEY)


def test_a_missing_socket_fails_the_store(tmp_path: Path) -> None:
    nowhere = checks.Q2TEndpoint(local_shell, unix_socket=str(tmp_path / "tm.ipc"))
    with pytest.raises(CheckError, match="script exited 7"):
        checks.private_payload_round_trip(nowhere, {}, OWN_KEY)


def test_a_tessera_q2t_port_reads_back_too(
    q2t_socket: Callable[[FakeQ2T], str], serve_q2t_tcp: Callable[[FakeQ2T], str]
) -> None:
    shared = FakeQ2T()
    one = checks.Q2TEndpoint(local_shell, unix_socket=q2t_socket(shared))
    tessera = checks.Q2TEndpoint(
        local_shell, base_url=serve_q2t_tcp(FakeQ2T(store=shared.store)), unix_socket=None
    )
    checks.private_payload_round_trip(one, {"tessera-0": tessera}, OWN_KEY)


def test_the_private_check_runs_curl_on_tm_ipc_through_ssm(aws: dict[str, Any]) -> None:
    instance = aws["ec2"].run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)[
        "Instances"
    ][0]["InstanceId"]
    ssm = boto3.client("ssm", region_name=REGION)
    writer = checks.Q2TEndpoint(checks.SsmShell(ssm, instance, sleep=lambda _: None))
    with pytest.raises(CheckError, match="no HTTP status"):  # moto runs nothing
        checks.private_payload_round_trip(writer, {}, OWN_KEY)
    [command] = ssm.list_commands(InstanceId=instance)["Commands"]
    [script] = command["Parameters"]["commands"]
    assert f"--unix-socket {TM_IPC_PATH}" in script
    assert "http://localhost/send" in script


# ---------------------------------------------------------------- the failure drill: units

TESSERA, QUORUM = TESSERA_UNIT, QUORUM_UNIT

STUB_SYSTEMCTL = """#!/bin/bash
# systemctl as the drill uses it: stop, start, is-active; the state lives in $STATE_DIR.
echo "$*" >> "$STATE_DIR/calls"
state="$STATE_DIR/$2"
case "$1" in
  stop) echo "${STOP_LEAVES:-inactive}" > "$state" ;;
  start) echo active > "$state" ;;
  is-active) s=$(cat "$state" 2>/dev/null || echo active); echo "$s"; [ "$s" = active ] ;;
  *) exit 1 ;;
esac
"""


@pytest.fixture
def systemctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stub systemctl first on PATH (no systemd here); returns the directory of its state."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "systemctl"
    stub.write_text(STUB_SYSTEMCTL)
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("STATE_DIR", str(tmp_path))
    return tmp_path


def test_a_unit_is_stopped_then_started_and_its_state_checked(systemctl: Path) -> None:
    assert checks.stop_unit(local_shell, TESSERA) == "inactive"
    assert checks.start_unit(local_shell, TESSERA) == "active"
    assert (systemctl / "calls").read_text().splitlines() == [
        f"stop {TESSERA}",
        f"is-active {TESSERA}",
        f"start {TESSERA}",
        f"is-active {TESSERA}",
    ]


def test_a_unit_still_active_after_stop_is_reported(
    systemctl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STOP_LEAVES", "active")
    with pytest.raises(CheckError, match=f"systemctl stop {QUORUM}: unit is 'active' after it"):
        checks.stop_unit(local_shell, QUORUM)


@pytest.mark.parametrize("bad", ["quorum-ha-tessera", "a.service; reboot", "../x.service", ""])
def test_a_bad_unit_name_is_refused_naming_it(bad: str) -> None:
    with pytest.raises(ValueError, match=rf"unit is {re.escape(repr(bad))}; allowed: a systemd"):
        checks.stop_unit(local_shell, bad)


def test_the_unit_is_stopped_through_ssm_run_command(aws: dict[str, Any]) -> None:
    instance = aws["ec2"].run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)[
        "Instances"
    ][0]["InstanceId"]
    ssm = boto3.client("ssm", region_name=REGION)
    with pytest.raises(CheckError, match="unit is 'unreported'"):  # moto runs nothing
        checks.stop_unit(checks.SsmShell(ssm, instance, sleep=lambda _: None), TESSERA)
    [command] = ssm.list_commands(InstanceId=instance)["Commands"]
    assert command["DocumentName"] == "AWS-RunShellScript"
    [script] = command["Parameters"]["commands"]
    assert f"systemctl stop {TESSERA}\n" in script
    # Bounded: SSM's own timeout covers the unit's stop timeout.
    assert int(command["Parameters"]["executionTimeout"][0]) > checks.UNIT_TIMEOUT


# ---------------------------------------------------------------- the failure drill: endpoints


@dataclass
class Edge:
    """The NLB's three listeners on one local server; `down` makes them answer 503."""

    down: bool = False
    hits_while_down: int = 0
    answered: threading.Event = field(default_factory=threading.Event)


def _edge_handler(edge: Edge) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return

        def reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            if edge.down:
                edge.hits_while_down += 1
                edge.answered.set()

        def do_GET(self) -> None:
            ok = self.path == "/upcheck" and not edge.down
            self.reply(200 if ok else 503, b"I'm up!" if ok else b"no upstream")

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.reply(503, b"") if edge.down else self.reply(200, b'{"result":"0x10"}')

    return Handler


@pytest.fixture
def edge() -> Iterator[Callable[[Edge], str]]:
    servers: list[ThreadingHTTPServer] = []

    def start(state: Edge) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _edge_handler(state))
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    try:
        yield start
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def endpoints_at(rpc: str, third_party: str, p2p: str) -> checks.Endpoints:
    return checks.Endpoints(rpc + "/", third_party, p2p)


def test_endpoints_that_keep_answering_count_no_failure(edge: Callable[[Edge], str]) -> None:
    url = edge(Edge())
    time = FakeTime()
    tally = checks.endpoints_keep_answering(
        local_shell, endpoints_at(url, url, url), duration=6, interval=2,
        sleep=time.sleep, clock=time.clock,
    )  # fmt: skip
    assert tally.asked == {"rpc": 4, "third-party": 4, "p2p": 4}
    assert tally.failures == []


def test_an_endpoint_that_dies_mid_watch_is_counted(edge: Callable[[Edge], str]) -> None:
    url = edge(Edge())
    p2p = Edge()
    p2p_url = edge(p2p)
    closed = f"http://127.0.0.1:{free_port()}"  # the P2P listener is gone: connection refused

    def p2p_dies_after_first_round(count: int) -> None:
        p2p.down = count == 1

    time = FakeTime(p2p_dies_after_first_round)
    tally = checks.endpoints_keep_answering(
        local_shell, endpoints_at(url, url, p2p_url), duration=4, interval=2,
        sleep=time.sleep, clock=time.clock,
    )  # fmt: skip
    assert tally.rounds == 3
    [failure] = tally.failures
    assert failure.startswith("2.0s p2p: GET ") and "HTTP 503" in failure
    still = FakeTime()
    refused = checks.endpoints_keep_answering(
        local_shell,
        endpoints_at(url, url, closed),
        duration=0,
        sleep=still.sleep,
        clock=still.clock,
    )
    assert [f.split(":", 1)[0] for f in refused.failures] == ["0.0s p2p"]


# ---------------------------------------------------------------- the failure drill: alarms

PREFIX = "qha-e2e-1234: "
PROXY_NS, HEALTHY, DEEP = "QuorumHA/Proxy", "quorum_proxy_upstream_healthy", "deep_check_up"
NLB_NS = "AWS/NetworkELB"
TARGET_GROUPS = checks.AlarmMatch((NLB_NS, "UnHealthyHostCount"))
T0, T1 = "tessera-0.e2e.quorum-ha.internal", "tessera-1.e2e.quorum-ha.internal"


def put_alarm(cloudwatch: Any, title: str, server: str, *, metric: str = HEALTHY) -> None:
    upstream = "third_party" if server.endswith(":9081") else "p2p"
    cloudwatch.put_metric_alarm(
        AlarmName=PREFIX + title,
        Namespace=PROXY_NS,
        MetricName=metric,
        Dimensions=[{"Name": "upstream", "Value": upstream}, {"Name": "server", "Value": server}],
        Statistic="Minimum",
        Period=60,
        EvaluationPeriods=2,
        Threshold=1,
        ComparisonOperator="LessThanThreshold",
    )


def put_math_alarm(cloudwatch: Any, title: str, node: str) -> None:
    """Shaped like the stalled-chain alarm: DIFF over a 60 s MetricStat, 5 periods."""
    cloudwatch.put_metric_alarm(
        AlarmName=PREFIX + title,
        Metrics=[
            {"Id": "e1", "Expression": "DIFF(head)", "ReturnData": True},
            {
                "Id": "head",
                "MetricStat": {
                    "Metric": {
                        "Namespace": "QuorumHA/Quorum",
                        "MetricName": "chain_head_block",
                        "Dimensions": [{"Name": "node", "Value": node}],
                    },
                    "Period": 60,
                    "Stat": "Maximum",
                },
                "ReturnData": False,
            },
        ],
        EvaluationPeriods=5,
        Threshold=0,
        ComparisonOperator="LessThanOrEqualToThreshold",
    )


@pytest.fixture
def cloudwatch() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("cloudwatch", region_name=REGION)
        for server in (f"{T0}:9081", f"{T0}:9001", f"{T1}:9081", f"{T1}:9001"):
            put_alarm(client, f"server {server} down", server)
        put_alarm(client, f"Tessera {T0}:9081 deep check failing", f"{T0}:9081", metric=DEEP)
        put_math_alarm(client, "quorum-0 chain head not advancing", "quorum-0")
        for role in ("rpc", "p2p"):
            client.put_metric_alarm(
                AlarmName=f"{PREFIX}{role} target group degraded",
                Namespace=NLB_NS,
                MetricName="UnHealthyHostCount",
                Dimensions=[
                    {"Name": "TargetGroup", "Value": f"targetgroup/q{role}/0123456789abcdef"},
                    {"Name": "LoadBalancer", "Value": "net/qha-e2e/0123456789abcdef"},
                ],
                Statistic="Maximum",
                Period=60,
                EvaluationPeriods=3,
                Threshold=1,
                ComparisonOperator="GreaterThanOrEqualToThreshold",
            )
        # Another stack's alarm on the same server name must never be picked.
        client.put_metric_alarm(
            AlarmName="qha-other: server down", Namespace=PROXY_NS, MetricName=HEALTHY,
            Dimensions=[{"Name": "server", "Value": f"{T0}:9081"}], Statistic="Minimum",
            Period=60, EvaluationPeriods=1, Threshold=1, ComparisonOperator="LessThanThreshold",
        )  # fmt: skip
        yield client


def healthy(server: str) -> checks.AlarmMatch:
    return checks.AlarmMatch((PROXY_NS, HEALTHY), {"server": server})


@pytest.mark.parametrize(
    ("match", "name"),
    [
        (healthy(f"{T0}:9081"), f"server {T0}:9081 down"),
        (
            checks.AlarmMatch((PROXY_NS, DEEP), {"upstream": "third_party"}),
            f"Tessera {T0}:9081 deep check failing",
        ),
        (checks.AlarmMatch(title=f"server {T1}:9001 down"), f"server {T1}:9001 down"),
        (
            checks.AlarmMatch(("QuorumHA/Quorum", "chain_head_block"), {"node": "quorum-0"}),
            "quorum-0 chain head not advancing",
        ),
    ],
)
def test_an_alarm_is_found_by_its_metric_and_dimensions_or_its_title(
    cloudwatch: Any, match: checks.AlarmMatch, name: str
) -> None:
    assert checks.matching_alarm(cloudwatch, PREFIX, match)["AlarmName"] == PREFIX + name


def test_an_ambiguous_or_missing_alarm_is_refused_naming_what_matched(cloudwatch: Any) -> None:
    with pytest.raises(CheckError, match=rf"^2 alarms under '{PREFIX}' match .*9081 down'"):
        checks.matching_alarm(
            cloudwatch, PREFIX, checks.AlarmMatch((PROXY_NS, HEALTHY), {"upstream": "third_party"})
        )
    with pytest.raises(CheckError, match=r"^0 alarms .* match 'nope': none$"):
        checks.matching_alarm(cloudwatch, PREFIX, checks.AlarmMatch(title="nope"))
    with pytest.raises(ValueError, match="needs a metric or a title"):
        checks.AlarmMatch()


def test_the_evaluation_window_is_read_from_the_alarm(cloudwatch: Any) -> None:
    single = checks.matching_alarm(cloudwatch, PREFIX, healthy(f"{T1}:9001"))
    math = checks.matching_alarm(
        cloudwatch, PREFIX, checks.AlarmMatch(title="quorum-0 chain head not advancing")
    )
    assert checks.evaluation_window(single) == 120  # 60 s x 2
    assert checks.evaluation_window(math) == 300  # the MetricStat's 60 s x 5


def test_waiting_ends_when_the_alarm_reaches_the_state(cloudwatch: Any) -> None:
    name = f"{PREFIX}server {T0}:9001 down"

    def fires_on_third_poll(count: int) -> None:
        if count == 3:
            cloudwatch.set_alarm_state(AlarmName=name, StateValue="ALARM", StateReason="drill")

    time = FakeTime(fires_on_third_poll)
    alarm, took = checks.wait_for_alarm_state(
        cloudwatch, PREFIX, healthy(f"{T0}:9001"), "ALARM", poll=15,
        sleep=time.sleep, clock=time.clock,
    )  # fmt: skip
    assert (alarm["AlarmName"], alarm["StateValue"], took) == (name, "ALARM", 45)


def test_an_alarm_that_never_fires_gives_up_after_its_window_and_margin(cloudwatch: Any) -> None:
    time = FakeTime()
    time.now = 1000.0
    with pytest.raises(CheckError, match=r"is OK, not ALARM, after 150s \(limit 150s\)"):
        checks.wait_for_alarm_state(
            cloudwatch, PREFIX, healthy(f"{T0}:9001"), "ALARM", since=990.0, margin=30,
            poll=20, sleep=time.sleep, clock=time.clock,
        )  # fmt: skip
    assert time.now == 1140  # counted from `since`: 120 s window + 30 s margin
    with pytest.raises(ValueError, match="state is 'FIRING'; allowed: OK, ALARM"):
        checks.wait_for_alarm_state(cloudwatch, PREFIX, healthy(f"{T0}:9001"), "FIRING")


# ---------------------------------------------------------------- the failure drill: whole


def test_the_primary_quorum_and_a_hosts_servers_come_from_the_proxy_config() -> None:
    config = standalone_proxy_config(
        quorum_dns_names=["q-1.x", "q-0.x"], tessera_dns_names=[T0, T1]
    )
    assert checks.primary_quorum(config) == "q-1.x"  # the order the stack lists them in
    assert checks.rpc_upstream(config) == "quorum"
    assert checks.upstream_servers_on(config, T1) == [
        ("third_party", f"{T1}:9081"),
        ("p2p", f"{T1}:9001"),
    ]
    assert checks.upstream_servers_on(config, "q-0.x") == [("quorum", "q-0.x:22000")]


@dataclass
class FakeMachine:
    """A machine's shell that understands the drill's systemctl script; stopping the unit
    takes `edge` down when given (a failure the proxy could not hide)."""

    edge: Edge | None = None
    state: str = "active"
    calls: list[str] = field(default_factory=list)

    def __call__(self, script: str, *, timeout: float) -> str:
        verb, unit = script.splitlines()[1].split()[1:]
        self.calls.append(f"{verb} {unit}")
        self.state = "inactive" if verb == "stop" else "active"
        if self.edge is not None:
            self.edge.down = self.state != "active"
            if self.edge.down:
                self.edge.answered.clear()
        return self.state + "\n"


def drive_alarms(
    cloudwatch: Any, machine: FakeMachine, names: list[str], edge: Edge | None = None
) -> Callable[[int], None]:
    """What CloudWatch does: ALARM while the unit is stopped, OK once it runs again. With a
    downed edge, it waits (bounded, real time) until the watch has met the failure."""

    def on_sleep(_: int) -> None:
        if edge is not None and edge.down:
            assert edge.answered.wait(20), "the watch never asked the downed endpoint"
        state = "ALARM" if machine.state == "inactive" else "OK"
        for name in names:
            cloudwatch.set_alarm_state(AlarmName=name, StateValue=state, StateReason="drill")

    return on_sleep


def tessera_step(
    machine: FakeMachine, calm: tuple[checks.AlarmMatch, ...] = (TARGET_GROUPS,)
) -> checks.DrillStep:
    return checks.DrillStep(
        f"Tessera on {T0}",
        machine,
        TESSERA,
        [healthy(f"{T0}:9081"), healthy(f"{T0}:9001"),
         checks.AlarmMatch(title=f"Tessera {T0}:9081 deep check failing")],
        calm,
    )  # fmt: skip


def settle(cloudwatch: Any) -> list[str]:
    names = [
        f"server {T0}:9081 down",
        f"server {T0}:9001 down",
        f"Tessera {T0}:9081 deep check failing",
    ]
    for name in names:
        cloudwatch.set_alarm_state(AlarmName=PREFIX + name, StateValue="OK", StateReason="calm")
    return [PREFIX + n for n in names]


def test_the_drill_stops_watches_alarms_starts_and_sees_ok(
    cloudwatch: Any, edge: Callable[[Edge], str]
) -> None:
    url = edge(Edge())
    machine = FakeMachine()
    names = settle(cloudwatch)
    time = FakeTime(drive_alarms(cloudwatch, machine, names))
    result = checks.failure_drill(
        tessera_step(machine), cloudwatch=cloudwatch, alarm_prefix=PREFIX, client=local_shell,
        endpoints=endpoints_at(url, url, url), alarm_poll=10, watch_interval=0.05,
        sleep=time.sleep, clock=time.clock,
    )  # fmt: skip
    assert machine.calls == [f"stop {TESSERA}", f"start {TESSERA}"]
    assert result.to_alarm == {names[0]: 10, names[1]: 10, names[2]: 10}
    assert result.to_ok == {names[0]: 10, names[1]: 10, names[2]: 10}
    assert result.answers.failures == [] and result.answers.rounds >= 1
    assert sorted(result.calm) == [
        f"{PREFIX}p2p target group degraded",
        f"{PREFIX}rpc target group degraded",
    ]


def test_a_drill_whose_failure_reaches_the_target_groups_fails(
    cloudwatch: Any, edge: Callable[[Edge], str]
) -> None:
    url = edge(Edge())
    machine = FakeMachine()
    names = [*settle(cloudwatch), f"{PREFIX}p2p target group degraded"]
    time = FakeTime(drive_alarms(cloudwatch, machine, names))
    with pytest.raises(
        CheckError, match="p2p target group degraded in ALARM: the failure reached"
    ):
        checks.failure_drill(
            tessera_step(machine), cloudwatch=cloudwatch, alarm_prefix=PREFIX,
            client=local_shell, endpoints=endpoints_at(url, url, url), alarm_poll=10,
            watch_interval=0.05, sleep=time.sleep, clock=time.clock,
        )  # fmt: skip
    assert machine.calls == [f"stop {TESSERA}", f"start {TESSERA}"]


def test_a_calm_match_that_picks_no_alarm_proves_nothing(cloudwatch: Any) -> None:
    with pytest.raises(CheckError, match=r"no alarm under .* matches 'rpc target group down'"):
        checks.alarms_not_firing(
            cloudwatch, PREFIX, [TARGET_GROUPS, checks.AlarmMatch(title="rpc target group down")]
        )


def test_a_drill_counts_an_endpoint_that_stopped_answering(
    cloudwatch: Any, edge: Callable[[Edge], str]
) -> None:
    url = edge(Edge())
    p2p = Edge()
    p2p_url = edge(p2p)
    machine = FakeMachine(edge=p2p)
    names = settle(cloudwatch)
    time = FakeTime(drive_alarms(cloudwatch, machine, names, edge=p2p))
    with pytest.raises(
        CheckError,
        match=rf"^Tessera on {T0}: [1-9]\d* of \d+ answers failed .*p2p: GET .*HTTP 503",
    ):
        checks.failure_drill(
            tessera_step(machine), cloudwatch=cloudwatch, alarm_prefix=PREFIX,
            client=local_shell, endpoints=endpoints_at(url, url, p2p_url), alarm_poll=10,
            watch_interval=0.05, sleep=time.sleep, clock=time.clock,
        )  # fmt: skip
    assert p2p.hits_while_down >= 1
    assert machine.calls == [f"stop {TESSERA}", f"start {TESSERA}"]


def test_a_drill_whose_alarm_never_fires_still_starts_the_unit(
    cloudwatch: Any, edge: Callable[[Edge], str]
) -> None:
    url = edge(Edge())
    machine = FakeMachine()
    settle(cloudwatch)
    time = FakeTime()
    with pytest.raises(CheckError, match=r"down' is OK, not ALARM, after 420s \(limit 420s\)"):
        checks.failure_drill(
            tessera_step(machine), cloudwatch=cloudwatch, alarm_prefix=PREFIX,
            client=local_shell, endpoints=endpoints_at(url, url, url), alarm_poll=60,
            watch_interval=0.05, sleep=time.sleep, clock=time.clock,
        )  # fmt: skip
    assert machine.calls == [f"stop {TESSERA}", f"start {TESSERA}"]
    assert machine.state == "active"


def test_a_drill_refuses_to_start_while_its_alarm_already_fires(
    cloudwatch: Any, edge: Callable[[Edge], str]
) -> None:
    url = edge(Edge())
    machine = FakeMachine()
    settle(cloudwatch)
    cloudwatch.set_alarm_state(
        AlarmName=f"{PREFIX}server {T0}:9001 down", StateValue="ALARM", StateReason="x"
    )
    time = FakeTime()
    with pytest.raises(CheckError, match="9001 down' is ALARM, not OK"):
        checks.failure_drill(
            tessera_step(machine), cloudwatch=cloudwatch, alarm_prefix=PREFIX,
            client=local_shell, endpoints=endpoints_at(url, url, url), margin=0,
            sleep=time.sleep, clock=time.clock,
        )  # fmt: skip
    assert machine.calls == []


def test_a_drill_waits_for_its_alarms_to_settle_within_one_window(
    cloudwatch: Any, edge: Callable[[Edge], str]
) -> None:
    """Fresh alarms lack data: the drill waits for OK first, all within one window + margin."""
    url = edge(Edge())
    machine = FakeMachine()
    names = settle(cloudwatch)
    for name in names:
        cloudwatch.set_alarm_state(
            AlarmName=name, StateValue="INSUFFICIENT_DATA", StateReason="new"
        )
    time = FakeTime()

    def first_settles_late(_: int) -> None:
        if time.now >= 400:
            cloudwatch.set_alarm_state(AlarmName=names[0], StateValue="OK", StateReason="data")

    time.on_sleep = first_settles_late
    with pytest.raises(CheckError, match=r"9001 down' is INSUFFICIENT_DATA, not OK, after 420s"):
        checks.failure_drill(
            tessera_step(machine), cloudwatch=cloudwatch, alarm_prefix=PREFIX,
            client=local_shell, endpoints=endpoints_at(url, url, url), alarm_poll=20,
            sleep=time.sleep, clock=time.clock,
        )  # fmt: skip
    assert machine.calls == []
    assert time.now <= 420 + 20  # one window + margin for all three, not one each
