"""The user-data codec: how a machine's cloud-init document is packed for EC2 and read back.

Packed once by node_bootstrap (base64 of one gzip, for EC2's userDataBase64); read back by the
policy pack (which must also read user data it did not pack), the diagram and the offline tools.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import re

import yaml

# EC2 refuses user data over 16 KiB (before base64); pack_user_data checks the packed bytes.
EC2_USER_DATA_LIMIT = 16384
_GZIP_MAGIC = b"\x1f\x8b"
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
# write_files encodings cloud-init decodes, -> whether the base64 holds gzip (cloud-init
# cc_write_files.py, canonicalize_extraction: b64/base64, gz+b64/gz+base64/gzip+b64/gzip+base64).
WRITE_FILES_ENCODINGS = {
    "b64": False,
    "base64": False,
    "gz+b64": True,
    "gzip+base64": True,
    "gz+base64": True,
    "gzip+b64": True,
}


class UserDataTooLargeError(ValueError):
    """One machine's packed user data is over EC2's limit: AWS would refuse the machine."""

    def __init__(self, machine: str, size: int) -> None:
        super().__init__(
            f"user data of {machine} is {size} bytes gzipped, over EC2's limit of "
            f"{EC2_USER_DATA_LIMIT} bytes: shrink the genesis (quorum-ha:genesis, e.g. its "
            "alloc accounts) or the peer lists (quorum-ha:quorumPeers, quorum-ha:tesseraPeers)"
        )
        self.machine = machine
        self.size = size


def pack_user_data(user_data: str, *, machine: str) -> str:
    """base64 of gzip of user data, for EC2's user_data_base64; deterministic (mtime 0).

    cloud-init detects gzip and unpacks it itself. EC2's 16 KiB limit applies to the decoded
    bytes, so the gzip is what must fit: raises UserDataTooLargeError naming `machine`.
    """
    packed = gzip.compress(user_data.encode(), mtime=0)
    if len(packed) > EC2_USER_DATA_LIMIT:
        raise UserDataTooLargeError(machine, len(packed))
    return base64.b64encode(packed).decode()


def decode_base64_text(value: str, *, gzipped: bool | None = None) -> str | None:
    """base64 text (gzipped when the bytes say so, or when told) decoded; None if it is not."""
    compact = "".join(value.split())
    if not compact or len(compact) % 4 or not _BASE64.fullmatch(compact):
        return None
    try:
        raw = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None
    if gzipped or (gzipped is None and raw[:2] == _GZIP_MAGIC):
        try:
            raw = gzip.decompress(raw)
        except OSError:
            return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def unpack_user_data(value: str) -> str:
    """The user data text cloud-init reads: plain as given, or base64 (of gzip) unpacked.

    Raises ValueError for what is neither plain (#..., Content-Type:) nor base64 text.
    """
    if value.startswith(("#", "Content-Type:")):
        return value
    text = decode_base64_text(value)
    if text is None:
        raise ValueError("user data is neither plain text nor base64 (of gzip) text")
    return text


def _write_files(document: object) -> list[dict[str, object]]:
    files = document.get("write_files") if isinstance(document, dict) else None
    return [e for e in files if isinstance(e, dict)] if isinstance(files, list) else []


def _content(entry: dict[str, object]) -> str | None:
    """A write_files entry's text as written on the machine; None if it cannot be decoded."""
    content = entry.get("content", "")
    if not isinstance(content, str):
        return None
    encoding = str(entry.get("encoding", "")).lower()
    if encoding not in WRITE_FILES_ENCODINGS:
        return content
    return decode_base64_text(content, gzipped=WRITE_FILES_ENCODINGS[encoding])


def cloud_config_files(user_data: str) -> dict[str, str]:
    """Path -> text of every file a `#cloud-config` user data writes (base64 entries decoded);
    the user data itself may be packed (base64 of gzip)."""
    document = yaml.safe_load(unpack_user_data(user_data)) or {}
    files: dict[str, str] = {}
    for entry in _write_files(document):
        text = _content(entry)
        if text is None:
            raise ValueError(f"write_files {entry.get('path')!r}: undecodable content")
        files[str(entry["path"])] = text
    return files


def user_data_texts(value: str) -> list[tuple[str, str]]:
    """(where, text) for user data and every base64 file its cloud-config packs, for any user
    data (packed or not, ours or not): what does not decode is read as it stands.

    Secrets hide as easily in a base64 write_files entry as in the script itself.
    """
    text = decode_base64_text(value)
    body = value if text is None else text
    texts = [("", body)]
    if not body.lstrip().startswith("#cloud-config"):
        return texts
    try:
        document = yaml.safe_load(body)
    except yaml.YAMLError:
        return texts
    for entry in _write_files(document):
        encoding = str(entry.get("encoding", "")).lower()
        if encoding in WRITE_FILES_ENCODINGS:
            decoded = _content(entry)
            if decoded is not None:
                texts.append((f" write_files {entry.get('path', '?')}", decoded))
    return texts
