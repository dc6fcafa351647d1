"""Where things live on a machine (Amazon Linux 2023): the one home of the runtime paths.

Rendered configs under ETC_DIR, scripts under BIN_DIR, the encrypted data volume at DATA_DIR,
secrets fetched at start into tmpfs under SECRETS_DIR, the services' logs under LOG_DIR.
The scripts in node_bootstrap/scripts.py spell some of these out (static text that shellcheck
reads as it runs); tests/domain/test_paths.py keeps every path they name under these.
"""

from __future__ import annotations

BIN_DIR = "/opt/quorum-ha/bin"
ETC_DIR = "/etc/quorum-ha"
BOOT_ENV = f"{ETC_DIR}/boot.env"
RUN_DIR = "/run/quorum-ha"
SECRETS_DIR = f"{RUN_DIR}/secrets"  # tmpfs: secrets never reach a disk
TM_IPC_PATH = f"{RUN_DIR}/tm.ipc"  # Quorum's private transaction manager socket
DATA_DIR = "/var/lib/quorum-ha"
LOG_DIR = "/var/log/quorum-ha"
# The device name the infrastructure attaches the data volume as (seen as NVMe on Nitro).
DATA_DEVICE_NAME = "/dev/sdf"
