"""The machine's shell scripts and Tessera's schema: static text, configured by boot.env.

Every script reads /etc/quorum-ha/boot.env (names and ARNs only), so the text here does not
change per machine and shellcheck sees exactly what runs.
"""

from __future__ import annotations

SERVICE_USER = "quorum-ha"
SERVICE_UID = 10001
# XFS allows 12 characters (mkfs.xfs -L: "maximum 12 characters"); test_real_tools runs it.
DATA_LABEL = "quorum-ha"

_PRELUDE = """\
set -euo pipefail
# shellcheck source=/dev/null
. /etc/quorum-ha/boot.env
"""

# The Quorum and Tessera start scripts begin alike: data volume mounted, secrets in tmpfs.
_SERVICE_PRELUDE = (
    _PRELUDE
    + """# shellcheck source=/dev/null
. /opt/quorum-ha/bin/common.sh

require_data_volume
prepare_secrets_dir
secrets=/run/quorum-ha/secrets
umask 077
"""
)

# Shared by the start scripts: Secrets Manager reads with the instance role, and the common
# `docker run` options (host network: the containers reach IMDSv2 with hop limit 1).
COMMON_SH = """\
#!/bin/bash
# Sourced by the start scripts.

fetch_secret() {
  aws secretsmanager get-secret-value --region "$AWS_REGION" --secret-id "$1" \\
    --query SecretString --output text
}

prepare_secrets_dir() {
  install -d -m 0750 -o "$SERVICE_UID" -g "$SERVICE_GID" /run/quorum-ha
  install -d -m 0700 -o "$SERVICE_UID" -g "$SERVICE_GID" /run/quorum-ha/secrets
}

require_data_volume() {
  if ! mountpoint -q "$DATA_DIR"; then
    echo "data volume not mounted at $DATA_DIR yet" >&2
    exit 1
  fi
}

# docker_opts NAME: options every container of ours gets, in DOCKER_OPTS for the caller.
docker_opts() {
  # shellcheck disable=SC2034  # read by the scripts that source this file
  DOCKER_OPTS=(
    --rm --name "$1" --network host --user "$SERVICE_UID:$SERVICE_GID"
    --log-driver awslogs
    --log-opt "awslogs-region=$AWS_REGION"
    --log-opt "awslogs-group=$LOG_GROUP_NAME"
    --log-opt "awslogs-stream=$NODE_DNS_NAME/$1"
  )
  docker rm -f "$1" >/dev/null 2>&1 || true
}
"""

MOUNT_DATA_VOLUME_SH = (
    """\
#!/bin/bash
# Find the encrypted data volume (attached as DATA_DEVICE_NAME, seen as NVMe on Nitro), make a
# filesystem only if it has none, and mount it at DATA_DIR. Safe to run on every boot.
"""
    + _PRELUDE
    + """
if mountpoint -q "$DATA_DIR"; then
  exit 0
fi

candidates=()
if [[ -n ${DATA_VOLUME_ID:-} ]]; then
  candidates+=("/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_${DATA_VOLUME_ID//-/}")
fi
# amazon-ec2-utils links the requested name (/dev/sdf) to the NVMe device; Xen types use xvdf.
candidates+=("$DATA_DEVICE_NAME" "/dev/xvd${DATA_DEVICE_NAME#/dev/sd}")

device=""
# The attachment is its own resource and may land minutes after boot.
for _ in $(seq 1 120); do
  for candidate in "${candidates[@]}"; do
    if [[ -b $candidate ]]; then
      device=$(readlink -f "$candidate")
      break 2
    fi
  done
  sleep 5
done
if [[ -z $device ]]; then
  echo "no data volume at ${candidates[*]} after 10 minutes" >&2
  exit 1
fi
# systemd mounts the volume itself from the fstab entry of an earlier boot, possibly while this
# script waited for the device: mounted where it belongs is success.
mounted_in_place() {
  [[ $(findmnt -n -o SOURCE --mountpoint "$DATA_DIR" 2>/dev/null || true) == "$device" ]]
}
if mounted_in_place; then
  echo "$device is already mounted at $DATA_DIR"
  exit 0
fi
if lsblk -n -o MOUNTPOINT "$device" | grep -q .; then
  echo "$device is already in use (mounted); refusing to touch it" >&2
  exit 1
fi

fstype=$(blkid -o value -s TYPE "$device" || true)
if [[ -z $fstype ]]; then
  mkfs.xfs -L """
    + DATA_LABEL
    + """ "$device"
  fstype=xfs
fi
uuid=$(blkid -o value -s UUID "$device")
if ! grep -q "^UUID=$uuid " /etc/fstab; then
  echo "UUID=$uuid $DATA_DIR $fstype defaults,nofail,noatime 0 2" >>/etc/fstab
fi
install -d -m 0755 "$DATA_DIR"
if ! mount --fstab /etc/fstab "$DATA_DIR"; then
  if ! mounted_in_place; then
    echo "could not mount $device at $DATA_DIR" >&2
    exit 1
  fi
  echo "$device was mounted at $DATA_DIR meanwhile"
fi
chown "$SERVICE_UID:$SERVICE_GID" "$DATA_DIR"
"""
)

WAIT_FOR_PTM_SH = (
    """\
#!/bin/bash
# Succeed once the private transaction manager on tm.ipc (Tessera itself, or the local proxy)
# answers GET /upcheck and GET /version with 200: GoQuorum calls both at start and gives up
# if either fails.
"""
    + _PRELUDE
    + """
answers_200() {
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 \\
    --unix-socket "$TM_IPC_PATH" "http://localhost$1") || return 1
  [[ $code == 200 ]]
}

deadline=$((SECONDS + ${PTM_WAIT_SECONDS:-600}))
for path in /upcheck /version; do
  until answers_200 "$path"; do
    if ((SECONDS >= deadline)); then
      echo "no 200 from $TM_IPC_PATH$path; giving up for now" >&2
      exit 1
    fi
    sleep 5
  done
done
echo "private transaction manager answers on $TM_IPC_PATH"
"""
)

START_QUORUM_SH = (
    """\
#!/bin/bash
# Fetch this node's key and the shared account with the instance role into tmpfs (0600, the
# service user's), wait for the private transaction manager, then run geth in the foreground.
# systemd restarts it on any exit, 112 included (geth exits 112 when Tessera keeps failing).
"""
    + _SERVICE_PRELUDE
    + """install -d -m 0700 -o "$SERVICE_UID" -g "$SERVICE_GID" "$secrets/keystore"

account_json=$(fetch_secret "$QUORUM_ACCOUNT_SECRET_ARN")
# The keystore may be stored as a JSON object or as a JSON string holding one.
keystore_filter='if (.keystore | type) == "string" then .keystore | fromjson else .keystore end'
printf '%s' "$account_json" | jq -e -c "$keystore_filter" >"$secrets/keystore/account.json"
printf '%s' "$account_json" | jq -e -j '.password' >"$secrets/account-password"
address=$(jq -e -r '.address' "$secrets/keystore/account.json")
unset account_json
fetch_secret "$QUORUM_NODE_KEY_SECRET_ARN" | tr -d '[:space:]' >"$secrets/nodekey"
chown "$SERVICE_UID:$SERVICE_GID" "$secrets/keystore/account.json" "$secrets/account-password" \\
  "$secrets/nodekey"
chmod 0600 "$secrets/keystore/account.json" "$secrets/account-password" "$secrets/nodekey"

datadir=$DATA_DIR/quorum
install -d -m 0750 -o "$SERVICE_UID" -g "$SERVICE_GID" "$datadir"
for file in static-nodes.json permissioned-nodes.json; do
  if [[ -f /etc/quorum-ha/quorum/$file ]]; then
    install -m 0644 -o "$SERVICE_UID" -g "$SERVICE_GID" \\
      "/etc/quorum-ha/quorum/$file" "$datadir/$file"
  fi
done
if [[ ! -d $datadir/geth/chaindata ]]; then
  docker run --rm --network none --user "$SERVICE_UID:$SERVICE_GID" \\
    -v "$datadir:$datadir" -v /etc/quorum-ha/quorum:/etc/quorum-ha/quorum:ro \\
    "$QUORUM_IMAGE" init --datadir "$datadir" /etc/quorum-ha/quorum/genesis.json
fi

/opt/quorum-ha/bin/wait-for-ptm.sh

geth_args=(
  --datadir "$datadir"
  --nodekey "$secrets/nodekey"
  --keystore "$secrets/keystore"
  --identity "$NODE_DNS_NAME"
  --networkid "$NETWORK_ID"
  --syncmode full
  --nodiscover
  --port "$QUORUM_P2P_PORT"
  --ptm.socket "$TM_IPC_PATH"
  # Without them the unix transport has no response timeout; GoQuorum's defaults, explicit
  # (common/http/config.go at v24.4.1: Timeout 5, DialTimeout 1, in seconds).
  --ptm.timeout 5 --ptm.dialtimeout 1
  # Only namespaces v24.4.1 registers (it has no "quorum" one; see test_quorum_files.py).
  --http --http.addr 0.0.0.0 --http.port "$QUORUM_RPC_PORT" --http.vhosts '*'
  --http.api 'eth,net,web3,istanbul,txpool'
  --ws --ws.addr 0.0.0.0 --ws.port "$QUORUM_WS_PORT" --ws.origins '*'
  --ws.api 'eth,net,web3,istanbul'
  # The HA node signs for its clients with the shared account. geth refuses --unlock while
  # HTTP-RPC is on unless told: only the proxy tasks reach 22000 (security groups) and the
  # personal API is not exposed.
  --unlock "0x${address#0x}" --password "$secrets/account-password" --allow-insecure-unlock
  --metrics --metrics.addr 127.0.0.1 --metrics.port "$QUORUM_METRICS_PORT"
  --verbosity 3
)
if [[ $QUORUM_PERMISSIONED == true ]]; then
  geth_args+=(--permissioned)
fi

docker_opts quorum
exec docker run "${DOCKER_OPTS[@]}" --stop-timeout 90 \\
  -v "$DATA_DIR:$DATA_DIR" -v /run/quorum-ha:/run/quorum-ha \\
  -v /etc/quorum-ha/quorum:/etc/quorum-ha/quorum:ro \\
  "$QUORUM_IMAGE" "${geth_args[@]}"
"""
)

APPLY_TESSERA_SCHEMA_SH = (
    """\
#!/bin/bash
# Apply Tessera's PostgreSQL schema. Every statement is IF NOT EXISTS and runs under one
# transaction-scoped advisory lock, so machines racing at boot take turns and all succeed.
"""
    + _PRELUDE
    + """
secrets=/run/quorum-ha/secrets
# The password stays in libpq's 0600 password file: never in psql's argv or environment.
PGUSER=$(<"$secrets/jdbc-username") PGPASSFILE=$secrets/pgpass \\
  PGCONNECT_TIMEOUT=10 psql "$TESSERA_DB_URI" -v ON_ERROR_STOP=1 -q -X \\
  -f /etc/quorum-ha/sql/tessera-schema.sql
"""
)

START_TESSERA_SH = (
    """\\
#!/bin/bash
# Fetch the database credentials with the instance role into tmpfs, add the pinned PostgreSQL
# JDBC driver (checked against its SHA-256), apply the schema, then run Tessera on its rendered
# config with the credentials merged in: one 0600 file in tmpfs, owned by the service user. The
# password is in no command line (ps, /proc/*/cmdline), environment, image or user data.
"""
    + _SERVICE_PRELUDE
    + """
jar_dir=$DATA_DIR/tessera/lib
jar=$jar_dir/postgresql-$PG_JDBC_VERSION.jar
install -d -m 0755 "$jar_dir"
if ! echo "$PG_JDBC_SHA256  $jar" | sha256sum --check --status 2>/dev/null; then
  curl -fsSL --retry 5 -o "$jar.part" \\
    "https://repo1.maven.org/maven2/org/postgresql/postgresql/$PG_JDBC_VERSION/postgresql-$PG_JDBC_VERSION.jar"
  if ! echo "$PG_JDBC_SHA256  $jar.part" | sha256sum --check --status; then
    echo "postgresql-$PG_JDBC_VERSION.jar does not match its pinned SHA-256" >&2
    rm -f "$jar.part"
    exit 1
  fi
  chmod 0644 "$jar.part"
  mv "$jar.part" "$jar"
fi

# printf is a shell builtin and jq reads stdin: the secret is never an argument.
db_json=$(fetch_secret "$DB_SECRET_ARN")
printf '%s' "$db_json" | jq -e -j '.username' >"$secrets/jdbc-username"
# libpq's password file (for psql): any host, port, database and user; '\\' and ':' escaped.
printf '%s' "$db_json" |
  jq -e -j '"*:*:*:*:" + (.password | gsub("\\\\\\\\"; "\\\\\\\\") | gsub(":"; "\\\\:"))
    + "\\n"' >"$secrets/pgpass"
config=$secrets/tessera-config.json
printf '%s' "$db_json" |
  jq -e --slurpfile rendered /etc/quorum-ha/tessera/tessera-config.json \\
    '. as $db | $rendered[0] | .jdbc += ($db | {username, password})' >"$config"
unset db_json
chown "$SERVICE_UID:$SERVICE_GID" "$secrets/jdbc-username" "$secrets/pgpass" "$config"
chmod 0600 "$secrets/jdbc-username" "$secrets/pgpass" "$config"

/opt/quorum-ha/bin/apply-tessera-schema.sh

if [[ $ROLE == pair ]]; then
  # Tessera serves Q2T on tm.ipc itself; a socket left by a crash would block the bind.
  rm -f "$TM_IPC_PATH"
fi

docker_opts tessera
# The image's entrypoint is /tessera/bin/tessera (docker/tessera.aws.Dockerfile). That start
# script runs java --module-path "$APP_HOME/lib" (the directory: tessera-dist/build.gradle
# applies org.javamodularity.moduleplugin, whose StartScriptsMutator writes it), so the driver
# mounted into lib/ is an automatic module that java.sql's `uses java.sql.Driver` binds.
exec docker run "${DOCKER_OPTS[@]}" --stop-timeout 30 \\
  -e "AWS_REGION=$AWS_REGION" \\
  -v /etc/quorum-ha/tessera:/etc/quorum-ha/tessera:ro \\
  -v "$jar:/tessera/lib/postgresql-$PG_JDBC_VERSION.jar:ro" \\
  -v /run/quorum-ha:/run/quorum-ha \\
  "$TESSERA_IMAGE" --configfile "$config"
"""
)

START_IPC_PROXY_SH = (
    """\
#!/bin/bash
# Run our proxy from ECR on tm.ipc (Quorum machines of setups full and tessera): Quorum's Q2T
# calls go round robin to every Tessera, retried on error, timeout and 404, POST included.
"""
    + _PRELUDE
    + """# shellcheck source=/dev/null
. /opt/quorum-ha/bin/common.sh

prepare_secrets_dir
registry=${PROXY_IMAGE%%/*}
# <account>.dkr.ecr.<region>.amazonaws.com: log in where the repository lives.
ecr_region=$(cut -d. -f4 <<<"$registry")
aws ecr get-login-password --region "$ecr_region" |
  docker login --username AWS --password-stdin "$registry" >/dev/null
docker pull --quiet "$PROXY_IMAGE" >/dev/null
rm -f "$TM_IPC_PATH"

docker_opts quorum-proxy
exec docker run "${DOCKER_OPTS[@]}" --stop-timeout 25 \\
  -v /etc/quorum-ha/proxy:/etc/quorum-proxy:ro -v /run/quorum-ha:/run/quorum-ha \\
  --entrypoint python "$PROXY_IMAGE" -m quorum_proxy --config /etc/quorum-proxy/config.yaml
"""
)

# Tessera 24.4's ddls/create-table/postgresql-ddl.sql, made idempotent and serialised.
TESSERA_SCHEMA_SQL = """\
BEGIN;
-- One lock for the whole project's schema; released at COMMIT.
SELECT pg_advisory_xact_lock(hashtext('quorum-ha:tessera-schema'));
CREATE TABLE IF NOT EXISTS ENCRYPTED_TRANSACTION (ENCODED_PAYLOAD BYTEA NOT NULL, \
PAYLOAD_CODEC VARCHAR(50), HASH BYTEA NOT NULL, TIMESTAMP DECIMAL(19), PRIMARY KEY (HASH));
CREATE TABLE IF NOT EXISTS ENCRYPTED_RAW_TRANSACTION (ENCRYPTED_KEY BYTEA NOT NULL, \
ENCRYPTED_PAYLOAD BYTEA NOT NULL, NONCE BYTEA NOT NULL, SENDER BYTEA NOT NULL, \
TIMESTAMP DECIMAL(19), HASH BYTEA NOT NULL, PRIMARY KEY (HASH));
CREATE TABLE IF NOT EXISTS PRIVACY_GROUP (ID BYTEA NOT NULL, LOOKUP_ID BYTEA NOT NULL, \
DATA BYTEA NOT NULL, TIMESTAMP DECIMAL(19), PRIMARY KEY (ID));
CREATE TABLE IF NOT EXISTS ST_TRANSACTION (ID BIGINT NOT NULL CONSTRAINT ST_TRANSACTION_PKEY \
PRIMARY KEY, PAYLOAD_CODEC VARCHAR(50), HASH VARCHAR(255) NOT NULL, PAYLOAD BYTEA, \
PRIVACY_MODE INTEGER, TIMESTAMP BIGINT, VALIDATION_STAGE BIGINT);
CREATE TABLE IF NOT EXISTS ST_AFFECTED_TRANSACTION (ID BIGINT NOT NULL CONSTRAINT \
ST_AFFECTED_TRANSACTION_PKEY PRIMARY KEY, AFFECTED_HASH VARCHAR(255) NOT NULL, TXN_ID BIGINT \
NOT NULL CONSTRAINT FK_ST_AFFECTED_TRANSACTION_TXN_ID REFERENCES ST_TRANSACTION);
CREATE INDEX IF NOT EXISTS ST_TRANSACTION_VALSTG ON ST_TRANSACTION (VALIDATION_STAGE);
COMMIT;
"""
