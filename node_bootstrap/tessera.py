"""Tessera's config file for one machine, and a validator applying Tessera's own rules.

The validator is a guard, not the authority: it re-implements, on the production path, checks
Tessera itself makes when it starts, so a config Tessera would refuse stops `pulumi up` (and
`./dev plan`) before a machine is created, not at its boot. This is the rules' one home here:
the cluster drill and the tests call it, none restates them. They mirror Tessera 24.4's config
module: ServerConfigsValidator (exactly one P2P, at least one Q2T), ServerAddressValidator (http
addresses carry a port; a serverAddress is never 0.0.0.0; a bindingAddress is http(s) only),
KeyConfiguration (`passwords` must be empty), KeyVaultConfigValidator (an AWS `endpoint` is an
http(s) URL) and JdbcConfig (`url` required), plus this project's TLS rule: the NLB terminates
TLS, so no server config asks Tessera for it.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from node_bootstrap.context import (
    TESSERA_P2P_PORT,
    TESSERA_Q2T_PORT,
    TESSERA_THIRD_PARTY_PORT,
    TM_IPC_PATH,
    NodeBootContext,
    validate_context,
    white_list_host,
)

APP_TYPES = ("P2P", "Q2T", "ThirdParty", "ENCLAVE")
KEY_VAULT_TYPES = ("AWS", "AZURE", "HASHICORP")


class TesseraConfigError(ValueError):
    """A Tessera config breaks one of Tessera's rules; the message names the field and value."""

    def __init__(self, field: str, value: Any, rule: str) -> None:
        shown = repr(value)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        super().__init__(f"tessera config {field}: {shown} is not valid; {rule}")
        self.field = field


def _server_configs(ctx: NodeBootContext) -> list[dict[str, Any]]:
    if ctx.role == "pair":
        # Quorum is on the same machine: it reaches Q2T on Tessera's own unix socket.
        q2t: dict[str, Any] = {
            "app": "Q2T",
            "communicationType": "REST",
            "serverAddress": f"unix:{TM_IPC_PATH}",
        }
    else:
        # The IPC proxy on each Quorum machine reaches Q2T over HTTP at this machine's name.
        q2t = {
            "app": "Q2T",
            "communicationType": "REST",
            "serverAddress": f"http://{ctx.node_dns_name}:{TESSERA_Q2T_PORT}",
            "bindingAddress": f"http://0.0.0.0:{TESSERA_Q2T_PORT}",
        }
    return [
        {
            "app": "ThirdParty",
            "communicationType": "REST",
            # HA rule: advertise the proxy (the NLB), bind on the machine itself.
            "serverAddress": ctx.third_party_url,
            "bindingAddress": f"http://0.0.0.0:{TESSERA_THIRD_PARTY_PORT}",
        },
        q2t,
        {
            # https://<name>:9001 when the NLB terminates TLS. No sslConfig (tls OFF): Tessera
            # serves plain HTTP to the proxy (ServerUtils.buildWebServer: TLS only when
            # ServerConfig.isSsl(), i.e. sslConfig.tls STRICT), and its P2P clients, all built
            # from this server config (ClientFactory.buildFrom), are Jersey's default client,
            # which verifies https peers against the JVM's default trust store
            # (JerseyClient -> SslConfigurator.getDefaultContext): public CAs, ACM's included.
            "app": "P2P",
            "communicationType": "REST",
            "serverAddress": ctx.p2p_url,
            "bindingAddress": f"http://0.0.0.0:{TESSERA_P2P_PORT}",
        },
    ]


def _peers(ctx: NodeBootContext) -> list[dict[str, str]]:
    urls = list(ctx.tessera_peer_urls)
    if ctx.use_white_list:
        # Tessera admits a caller only if its IP equals the host of a peer URL, and behind the
        # NLB every caller is one of the proxy tasks: list them as peers.
        for address in ctx.proxy_addresses:
            host = white_list_host("proxy_addresses", address)
            shown = f"[{host}]" if ":" in host else host
            urls.append(f"http://{shown}:{TESSERA_P2P_PORT}")
    return [{"url": url} for url in dict.fromkeys(urls)]


def tessera_config(ctx: NodeBootContext) -> dict[str, Any]:
    """The config as a dict (see render_tessera_config)."""
    validate_context(ctx)
    if not ctx.runs_tessera:
        raise TesseraConfigError("role", ctx.role, "Tessera runs on pair and tessera machines")
    return {
        "useWhiteList": ctx.use_white_list,
        "disablePeerDiscovery": False,
        "jdbc": {
            # username and password come from Secrets Manager at start, merged into a 0600
            # copy of this file in tmpfs (start-tessera.sh): never in this file or on argv.
            "url": ctx.jdbc_url,
            # The boot applies the schema once under an advisory lock: two Tessera racing
            # through autoCreateTables could both try to create the same tables.
            "autoCreateTables": False,
        },
        "serverConfigs": _server_configs(ctx),
        "peer": _peers(ctx),
        "keys": {
            "keyVaultConfigs": [
                {
                    "keyVaultType": "AWS",
                    "properties": {
                        "endpoint": f"https://secretsmanager.{ctx.region}.amazonaws.com"
                    },
                }
            ],
            "keyData": [
                {
                    "awsSecretsManagerPublicKeyId": f"{ctx.tessera_key_id}Pub",
                    "awsSecretsManagerPrivateKeyId": f"{ctx.tessera_key_id}Key",
                }
            ],
        },
        "alwaysSendTo": [],
    }


def render_tessera_config(ctx: NodeBootContext) -> str:
    """Tessera's JSON config for a pair or tessera machine; validated before it is returned."""
    config = tessera_config(ctx)
    validate_tessera_config(config)
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def _check_address(field: str, value: Any, *, binding: bool) -> None:
    schemes = ("http", "https") if binding else ("unix", "http", "https")
    if not isinstance(value, str) or not value:
        raise TesseraConfigError(field, value, f"a URL with scheme {' | '.join(schemes)}")
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        raise TesseraConfigError(field, value, f"the scheme must be {' | '.join(schemes)}")
    if parts.scheme == "unix":
        if not parts.path.startswith("/"):
            raise TesseraConfigError(field, value, "a unix address is unix:/absolute/path")
        return
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None or not parts.hostname:
        raise TesseraConfigError(field, value, "an http(s) address needs a host and a port")
    if not binding and parts.hostname == "0.0.0.0":
        raise TesseraConfigError(
            field, value, "a serverAddress is advertised to others and cannot be 0.0.0.0"
        )


def _check_no_tls(where: str, ssl: Any) -> None:
    """sslConfig absent or tls OFF. STRICT makes Tessera serve TLS on the binding address,
    where the proxy speaks plain HTTP (TLS ends at the NLB), and makes its clients trust only
    the configured stores instead of the JVM's (ServerConfig.isSsl, SslConfigValidator)."""
    if ssl is None:
        return
    tls = ssl.get("tls") if isinstance(ssl, dict) else None
    if tls != "OFF":
        raise TesseraConfigError(
            f"{where}.sslConfig.tls",
            tls,
            "must be OFF or sslConfig left out: the NLB terminates TLS and the proxy reaches "
            "Tessera over plain HTTP",
        )


def _check_server_configs(cfg: dict[str, Any]) -> None:
    servers = cfg.get("serverConfigs")
    if not isinstance(servers, list) or not servers:
        raise TesseraConfigError("serverConfigs", servers, "a non-empty list is required")
    counts = dict.fromkeys(APP_TYPES, 0)
    for i, server in enumerate(servers):
        where = f"serverConfigs[{i}]"
        if not isinstance(server, dict):
            raise TesseraConfigError(where, server, "each server config is an object")
        app = server.get("app")
        if app not in APP_TYPES:
            raise TesseraConfigError(f"{where}.app", app, f"app must be {' | '.join(APP_TYPES)}")
        counts[app] += 1
        if "serverAddress" not in server:
            raise TesseraConfigError(f"{where}.serverAddress", None, "serverAddress is required")
        _check_address(f"{where}.serverAddress", server["serverAddress"], binding=False)
        if server.get("bindingAddress") is not None:
            _check_address(f"{where}.bindingAddress", server["bindingAddress"], binding=True)
        _check_no_tls(where, server.get("sslConfig"))
        if server.get("communicationType", "REST") != "REST":
            raise TesseraConfigError(
                f"{where}.communicationType", server["communicationType"], "must be REST"
            )
    if counts["P2P"] != 1:
        raise TesseraConfigError(
            "serverConfigs", counts["P2P"], "exactly one P2P server must be configured"
        )
    if counts["Q2T"] == 0:
        raise TesseraConfigError("serverConfigs", 0, "at least one Q2T server must be configured")


def _check_keys(cfg: dict[str, Any]) -> None:
    keys = cfg.get("keys")
    if not isinstance(keys, dict):
        raise TesseraConfigError("keys", keys, "a keys object is required")
    if keys.get("passwords"):
        raise TesseraConfigError(
            "keys.passwords", "(hidden)", "passwords must be empty; use passwordFile"
        )
    vaults = keys.get("keyVaultConfigs")
    if not isinstance(vaults, list) or not vaults:
        raise TesseraConfigError("keys.keyVaultConfigs", vaults, "one AWS key vault is required")
    for i, vault in enumerate(vaults):
        where = f"keys.keyVaultConfigs[{i}]"
        if not isinstance(vault, dict):
            raise TesseraConfigError(where, vault, "each key vault config is an object")
        if "keyVaultConfigType" in vault:
            raise TesseraConfigError(
                f"{where}.keyVaultConfigType",
                vault["keyVaultConfigType"],
                "Tessera reads keyVaultType (the docs' keyVaultConfigType is ignored)",
            )
        kind = vault.get("keyVaultType")
        if kind not in KEY_VAULT_TYPES:
            raise TesseraConfigError(
                f"{where}.keyVaultType",
                kind,
                f"keyVaultType must be {' | '.join(KEY_VAULT_TYPES)}",
            )
        endpoint = (vault.get("properties") or {}).get("endpoint")
        if endpoint is not None and urlsplit(str(endpoint)).scheme not in ("http", "https"):
            raise TesseraConfigError(
                f"{where}.properties.endpoint", endpoint, "an AWS endpoint URL with its scheme"
            )
    if not any(isinstance(v, dict) and v.get("keyVaultType") == "AWS" for v in vaults):
        raise TesseraConfigError(
            "keys.keyVaultConfigs", [v.get("keyVaultType") for v in vaults], "keyVaultType AWS"
        )
    key_data = keys.get("keyData")
    if not isinstance(key_data, list) or not key_data:
        raise TesseraConfigError("keys.keyData", key_data, "at least one key pair is required")
    for i, pair in enumerate(key_data):
        for name in ("awsSecretsManagerPublicKeyId", "awsSecretsManagerPrivateKeyId"):
            value = pair.get(name) if isinstance(pair, dict) else None
            if not isinstance(value, str) or not value:
                raise TesseraConfigError(
                    f"keys.keyData[{i}].{name}",
                    value,
                    "both AWS Secrets Manager key ids are needed",
                )


def _check_jdbc(cfg: dict[str, Any]) -> None:
    jdbc = cfg.get("jdbc")
    if not isinstance(jdbc, dict):
        raise TesseraConfigError("jdbc", jdbc, "a jdbc object with url is required")
    url = jdbc.get("url")
    if not isinstance(url, str) or not url.startswith("jdbc:"):
        raise TesseraConfigError("jdbc.url", url, "a JDBC URL is required")
    if "password" in jdbc:
        raise TesseraConfigError(
            "jdbc.password",
            "(hidden)",
            "keep it out of the file: the boot merges it into a tmpfs copy at start",
        )


def validate_tessera_config(cfg: dict[str, Any] | str) -> None:
    """Raise TesseraConfigError if Tessera would refuse cfg or it breaks this project's rules."""
    if isinstance(cfg, str):
        text = cfg
        try:
            cfg = json.loads(text)
        except json.JSONDecodeError as e:
            raise TesseraConfigError("(document)", text[:40], f"not JSON ({e.msg})") from None
    if not isinstance(cfg, dict):
        raise TesseraConfigError("(document)", cfg, "a JSON object is required")
    _check_server_configs(cfg)
    _check_keys(cfg)
    _check_jdbc(cfg)
    if not isinstance(cfg.get("useWhiteList", False), bool):
        raise TesseraConfigError("useWhiteList", cfg["useWhiteList"], "true or false")
    peers = cfg.get("peer", [])
    if not isinstance(peers, list):
        raise TesseraConfigError("peer", peers, "a list of {url}")
    for i, peer in enumerate(peers):
        url = peer.get("url") if isinstance(peer, dict) else None
        _check_address(f"peer[{i}].url", url, binding=True)
