"""Across every setup and node count: shellcheck passes on every script the machines run, each
script a unit or runcmd names exists, and no fixture secret value appears in anything rendered."""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
from pathlib import Path

from boot_fixtures import (
    CASES,
    SECRET_VALUES,
    SECRETS,
    cloud_config_doc,
    make_context,
    require_tool,
    written_files,
)

from node_bootstrap import (
    render_ipc_proxy_config,
    render_quorum_files,
    render_standalone_proxy_config,
    render_tessera_config,
    render_user_data,
)
from node_bootstrap.user_data import machine_files


def every_rendered_text() -> dict[str, str]:
    """name -> text of everything the renderers produce for every case."""
    out: dict[str, str] = {}
    for case in CASES:
        ctx = make_context(case)
        user_data = render_user_data(ctx)
        out[f"{case.id}:user-data"] = user_data
        for path, text in written_files(cloud_config_doc(user_data)).items():
            out[f"{case.id}:{path}"] = text
        if ctx.runs_tessera:
            out[f"{case.id}:tessera"] = render_tessera_config(ctx)
        if ctx.runs_quorum:
            for name, text in render_quorum_files(ctx).items():
                out[f"{case.id}:quorum/{name}"] = text
        if ctx.runs_ipc_proxy:
            out[f"{case.id}:ipc-proxy"] = render_ipc_proxy_config(ctx)
        out[f"{case.id}:standalone-proxy"] = render_standalone_proxy_config(
            quorum_dns_names=ctx.quorum_dns_names, tessera_dns_names=ctx.tessera_dns_names
        )
    return out


def test_no_rendered_file_holds_a_fixture_secret() -> None:
    texts = every_rendered_text()
    # Guard: the scan covers every machine's user data and files, and the secrets are real.
    assert len([n for n in texts if n.endswith(":user-data")]) == len(CASES)
    assert len(texts) > 10 * len(CASES)
    assert all(
        value in SECRETS.values() or value in json.dumps(SECRETS) for value in SECRET_VALUES
    )
    leaks = [(name, v) for name, text in texts.items() for v in SECRET_VALUES if v in text]
    assert leaks == []


def test_the_secret_scan_would_see_a_leak() -> None:
    # The scan reads decoded file contents: a secret in a gz+b64 file would still be found.
    ctx = make_context(CASES[0])
    doc = cloud_config_doc(render_user_data(ctx))
    entry = doc["write_files"][0]
    entry["encoding"] = "gz+b64"
    entry["content"] = base64.b64encode(
        gzip.compress(("DB_PASSWORD=" + SECRET_VALUES[0]).encode())
    ).decode()
    assert SECRET_VALUES[0] in written_files(doc)[entry["path"]]


def unique_scripts() -> dict[str, str]:
    scripts: dict[str, str] = {}
    for case in CASES:
        ctx = make_context(case)
        for path, (_, text) in machine_files(ctx).items():
            if path.endswith(".sh"):
                scripts.setdefault(text, f"{case.id}-{Path(path).name}")
        if ctx.runs_quorum:
            for name, text in render_quorum_files(ctx).items():
                if name.endswith(".sh"):
                    scripts.setdefault(text, f"{case.id}-{name}")
    return {name: text for text, name in scripts.items()}


def test_shellcheck_passes_on_every_script(tmp_path: Path) -> None:
    shellcheck = require_tool("shellcheck")
    scripts = unique_scripts()
    names = {name.split("-", 2)[-1] for name in scripts}
    assert names >= {
        "common.sh",
        "mount-data-volume.sh",
        "start-tessera.sh",
        "apply-tessera-schema.sh",
        "start-ipc-proxy.sh",
        "start-quorum.sh",
        "wait-for-ptm.sh",
    }
    paths = []
    for name, text in scripts.items():
        path = tmp_path / name
        path.write_text(text)
        paths.append(str(path))
    proc = subprocess.run(
        [shellcheck, "--shell=bash", "--severity=style", "--format=gcc", *paths],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_script_a_unit_or_runcmd_runs_is_written() -> None:
    for case in CASES:
        files = machine_files(make_context(case))
        for path, (_mode, text) in files.items():
            if not path.startswith("/etc/systemd/system/"):
                continue
            for line in text.splitlines():
                if line.startswith("ExecStart="):
                    program, *args = line.removeprefix("ExecStart=").split()
                    if program == "/usr/sbin/logrotate":  # AL2023's logrotate package
                        assert args[-1] in files, (case.id, args)
                        continue
                    assert program in files and not args, (case.id, program)
                    assert files[program][0] == "0755", (case.id, program)
        for path, (_mode, text) in files.items():
            if path.endswith(".sh"):
                for called in ("wait-for-ptm.sh", "apply-tessera-schema.sh", "common.sh"):
                    if f"/opt/quorum-ha/bin/{called}" in text:
                        assert f"/opt/quorum-ha/bin/{called}" in files, (case.id, path, called)
