"""The pack as the CLI runs it: `python policy/` serves the analyzer over gRPC on a port it prints.

This drives the real servicer of pulumi_policy (deserialisation, unknown values, enforcement)
over gRPC, the way `pulumi preview --policy-pack policy` does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

from policy.rules import PACK_NAME, all_policies

POLICY_DIR = Path(__file__).resolve().parents[2] / "policy"


@pytest.fixture(scope="module")
def analyzer() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    # The language host runs `python <pack dir>` with the pack dir as working directory.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    process = subprocess.Popen(
        [sys.executable, str(POLICY_DIR)],
        cwd=POLICY_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stdout is not None
        port = process.stdout.readline().decode().strip()
        assert port.isdigit(), process.stderr.read().decode() if process.stderr else port
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=20)
            yield analyzer_pb2_grpc.AnalyzerStub(channel)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def analyze(stub: analyzer_pb2_grpc.AnalyzerStub, type_: str, props: dict[str, Any]) -> Any:
    properties = struct_pb2.Struct()
    properties.update(props)
    request = analyzer_pb2.AnalyzeRequest(
        type=type_,
        properties=properties,
        urn=f"urn:pulumi:prod::quorum-ha::{type_}::r1",
        name="r1",
    )
    return stub.Analyze(request, timeout=20)


def test_the_pack_describes_every_rule(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty(), timeout=20)
    assert info.name == PACK_NAME
    assert sorted(p.name for p in info.policies) == sorted(p.name for p in all_policies())


def test_the_pack_blocks_an_unrotated_key(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    answer = analyze(analyzer, "aws:kms/key:Key", {"enableKeyRotation": False})
    [diagnostic] = answer.diagnostics
    assert diagnostic.policyName == "kms-key-rotation"
    assert diagnostic.enforcementLevel == analyzer_pb2.MANDATORY
    assert "r1: enableKeyRotation is not true" in diagnostic.message


def test_the_pack_passes_a_compliant_secret(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    answer = analyze(
        analyzer, "aws:secretsmanager/secret:Secret", {"kmsKeyId": "arn:aws:kms:r:1:key/k"}
    )
    assert list(answer.diagnostics) == []


def test_a_key_unknown_at_preview_is_not_a_violation(
    analyzer: analyzer_pb2_grpc.AnalyzerStub,
) -> None:
    unknown = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # the engine's unknown-string sentinel
    answer = analyze(analyzer, "aws:cloudwatch/logGroup:LogGroup", {"kmsKeyId": unknown})
    assert list(answer.diagnostics) == []
