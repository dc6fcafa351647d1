"""Machines get their user data packed (one gzip, base64) and a too-large one stops the program."""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from node_bootstrap import EC2_USER_DATA_LIMIT
from tests.inspection import unpack_user_data
from tools.offline import OfflineProgramError, OfflineRun, load_stack_config, run_offline

INSTANCE = "aws:ec2/instance:Instance"


def cloud_init() -> str:
    """cloud-init's path; under CI a missing tool fails the test, locally it skips."""
    path = shutil.which("cloud-init")
    if path:
        return path
    reason = "cloud-init is not installed (listed in apt-packages.txt; ./dev installs it)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason + "; CI is not set, so skipping locally")


def packed_bytes(instance_inputs: dict[str, object]) -> bytes:
    value = instance_inputs["userDataBase64"]
    assert isinstance(value, str)
    return base64.b64decode(value, validate=True)


def test_every_setup_packs_a_cloud_config_cloud_init_accepts(
    shaped_run: OfflineRun, tmp_path: Path
) -> None:
    tool = cloud_init()
    instances = shaped_run.of_type(INSTANCE)
    assert len(instances) >= 2
    for instance in instances:
        assert "userData" not in instance.inputs, instance.name
        raw = packed_bytes(instance.inputs)
        assert raw[:2] == b"\x1f\x8b", instance.name  # gzip, which cloud-init unpacks
        assert len(raw) <= EC2_USER_DATA_LIMIT, instance.name
        path = tmp_path / f"{instance.name}.yaml"
        path.write_bytes(gzip.decompress(raw))
        proc = subprocess.run(
            [tool, "schema", "--config-file", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, instance.name + proc.stdout + proc.stderr
        assert "Valid cloud-config" in proc.stdout


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_example_stack_user_data_fits_ec2(stack: str) -> None:
    run = run_offline(load_stack_config(stack), stack=stack)
    instances = run.of_type(INSTANCE)
    assert instances
    for instance in sorted(instances, key=lambda i: i.name):
        size = len(packed_bytes(instance.inputs))
        plain = unpack_user_data(str(instance.inputs["userDataBase64"]))
        print(f"{stack} {instance.name}: {size} bytes packed, {len(plain.encode())} plain")
        assert size <= EC2_USER_DATA_LIMIT, instance.name


def test_a_genesis_too_large_for_ec2_stops_the_program_with_one_line(
    offline: Callable[..., OfflineRun],
) -> None:
    genesis = dict(load_stack_config("dev")["quorum-ha:genesis"])

    # Hash-derived addresses and balances look random: gzip cannot shrink them under 16 KiB.
    def digest(label: str, i: int) -> str:
        return hashlib.sha256(f"{label}{i}".encode()).hexdigest()

    genesis["alloc"] = {
        "0x" + digest("account", i)[:40]: {"balance": str(int(digest("balance", i)[:24], 16))}
        for i in range(3000)
    }
    with pytest.raises(OfflineProgramError) as caught:
        offline("pair", genesis=genesis)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("user data of pair-")
    assert ".dev.quorum-ha.internal is " in message
    assert f"over EC2's limit of {EC2_USER_DATA_LIMIT} bytes" in message
    assert "shrink the genesis" in message
