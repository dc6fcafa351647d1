"""The machine's paths: the scripts' static text names only the layout domain/paths.py holds."""

from __future__ import annotations

import re

from domain import paths
from node_bootstrap import scripts

DIRS = (paths.BIN_DIR, paths.ETC_DIR, paths.RUN_DIR, paths.DATA_DIR, paths.LOG_DIR)


def test_every_quorum_ha_path_in_the_scripts_is_under_a_domain_directory() -> None:
    texts = [v for k, v in vars(scripts).items() if k.isupper() and isinstance(v, str)]
    found = {
        m for text in texts for m in re.findall(r"/[a-z]+(?:/[a-z]+)*/quorum-ha[\w./-]*", text)
    }
    assert found  # the scripts do spell paths out
    outside = {p for p in found if not any(p == d or p.startswith(d + "/") for d in DIRS)}
    assert not outside


def test_the_derived_paths_sit_where_the_scripts_expect_them() -> None:
    assert f"{paths.ETC_DIR}/boot.env" == paths.BOOT_ENV
    assert paths.TM_IPC_PATH.startswith(paths.RUN_DIR + "/")
    assert paths.SECRETS_DIR.startswith(paths.RUN_DIR + "/")
