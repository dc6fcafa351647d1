"""Item 12 and item 9's docs: the Dockerfile's contract and the README's configs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable

import pytest
import yaml
from proxy_support import PROXY_COMMAND, PROXY_DIR, Proxy, UpstreamServer, free_port, http_config
from quorum_proxy.config import parse_config

DOCKERFILE = (PROXY_DIR / "Dockerfile").read_text()
README = (PROXY_DIR / "README.md").read_text()


def instruction(name: str) -> list[str]:
    """Every value of one Dockerfile instruction, continuation lines joined."""
    text = DOCKERFILE.replace("\\\n", " ")
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.+)$", text, re.MULTILINE)]


def test_entrypoint_is_the_command_the_tests_run() -> None:
    (entrypoint,) = instruction("ENTRYPOINT")
    argv = json.loads(entrypoint)
    assert argv[0] == "python"
    assert argv[1:] == PROXY_COMMAND[1:]


def test_base_image_is_slim_python_311_pinned_by_version_and_digest() -> None:
    build, final = instruction("FROM")
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", final)
    assert build == f"{final} AS relay-scan"  # the build stage's interpreter is the image's


def test_the_relay_scans_are_built_in_a_stage_and_must_load_in_the_image() -> None:
    runs = instruction("RUN")
    assert "python build_relay_scan.py" in runs
    copies = instruction("COPY")
    assert "--from=relay-scan /build/quorum_proxy/ /app/quorum_proxy/" in copies
    assert copies.index(
        "--from=relay-scan /build/quorum_proxy/ /app/quorum_proxy/"
    ) > copies.index("quorum_proxy/ /app/quorum_proxy/")
    (check,) = [run for run in runs if "relay_scan.COMPILED" in run]
    # the check run against the modules here: it passes where they are built, fails where not
    argv = ["python", "-c", check.split('-c "', 1)[1].rstrip('"')]
    env = {"PYTHONPATH": str(PROXY_DIR)}
    assert subprocess.run([sys.executable, *argv[1:]], env=env, check=False).returncode == 0


def test_image_runs_as_a_non_root_user() -> None:
    users = instruction("USER")
    assert users, "no USER instruction"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_healthcheck_gets_healthz_with_python() -> None:
    (check,) = instruction("HEALTHCHECK")
    assert "CMD" in check and '"python"' in check
    assert "QUORUM_PROXY_HEALTH_URL" in check
    assert "QUORUM_PROXY_HEALTH_URL=http://127.0.0.1:9900/healthz" in DOCKERFILE


def healthcheck_argv() -> list[str]:
    (check,) = instruction("HEALTHCHECK")
    argv: list[str] = json.loads(check.split("CMD", 1)[1])
    return [sys.executable, *argv[1:]]


def test_healthcheck_command_passes_on_a_live_proxy_and_fails_on_a_dead_port(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    proxy = start_proxy(http_config([upstreams().address]))
    host, port = proxy.addr("admin")
    live = {"QUORUM_PROXY_HEALTH_URL": f"http://{host}:{port}/healthz"}
    dead = {"QUORUM_PROXY_HEALTH_URL": f"http://127.0.0.1:{free_port()}/healthz"}
    passing = subprocess.run(healthcheck_argv(), env=live, timeout=20, check=False)
    failing = subprocess.run(
        healthcheck_argv(), env=dead, timeout=20, capture_output=True, check=False
    )
    assert passing.returncode == 0
    assert failing.returncode != 0


def test_image_exposes_the_proxy_ports() -> None:
    exposed = {p for line in instruction("EXPOSE") for p in line.split()}
    assert {"22000", "9081", "9001", "9900"} <= exposed


def test_runtime_requirements_are_pinned() -> None:
    lines = [
        line.strip()
        for line in (PROXY_DIR / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines and all(
        re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*", line) for line in lines
    )
    assert {line.split("==")[0].lower() for line in lines} == {
        "uvloop",
        "httptools",
        "pyyaml",
        "orjson",
    }


def test_copied_sources_exist() -> None:
    for copy in instruction("COPY"):
        source = copy.split()[0]
        if source.startswith("--from="):
            continue  # from the build stage
        assert (PROXY_DIR / source).exists(), source


README_CONFIGS = [
    block for block in re.findall(r"```yaml\n(.*?)```", README, re.DOTALL) if "listeners:" in block
]


@pytest.mark.parametrize(
    "block", README_CONFIGS, ids=[f"readme-config-{i}" for i in range(len(README_CONFIGS))]
)
def test_readme_configs_are_valid(block: str) -> None:
    config = parse_config(yaml.safe_load(block))
    assert config.listeners


def test_readme_shows_the_standalone_and_the_ipc_proxy() -> None:
    configs = [parse_config(yaml.safe_load(b)) for b in README_CONFIGS]
    listens = {lc.listen for c in configs for lc in c.listeners}
    assert {
        "0.0.0.0:22000",
        "0.0.0.0:9081",
        "0.0.0.0:9001",
        "unix:/run/quorum-ha/tm.ipc",
    } <= listens
    standalone = next(c for c in configs if any(lc.listen == "0.0.0.0:9001" for lc in c.listeners))
    p2p = next(lc for lc in standalone.listeners if lc.name == "p2p")
    prefixes = {r.prefix for r in p2p.routes}
    assert {"/resend", "/push", "/partyinfo", "/partyinfo/validate", "/upcheck", "/"} <= prefixes
    assert next(r for r in p2p.routes if r.prefix == "/partyinfo").mirror is not None


def test_readme_documents_every_metric() -> None:
    from quorum_proxy.metrics import Metrics

    metrics = Metrics()
    for family in vars(metrics).values():
        assert f"`{family.name}`" in README


# Debian's base-passwd accounts, present in every Debian image (useradd would refuse a clash)
DEBIAN_BASE_ACCOUNTS = {
    "root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp",
    "proxy", "www-data", "backup", "list", "irc", "gnats", "nobody", "_apt", "staff", "users",
}  # fmt: skip


def test_image_user_and_group_do_not_clash_with_debian_base_accounts() -> None:
    (run,) = [r for r in instruction("RUN") if "useradd" in r]
    names = re.findall(r"(?:useradd|groupadd) [^&]*?(\S+)\s*(?:&&|$)", run)
    assert names and not set(names) & DEBIAN_BASE_ACCOUNTS, names
    uid = re.search(r"useradd [^&]*--uid (\d+)", run)
    assert uid is not None and instruction("USER")[-1].split(":")[0] == uid.group(1)
