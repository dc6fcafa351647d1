"""The user-data codec: what node_bootstrap packs, the policy pack, diagram and tools read back."""

from __future__ import annotations

import base64
import gzip
import secrets

import pytest
import yaml

from domain.user_data import (
    EC2_USER_DATA_LIMIT,
    UserDataTooLargeError,
    cloud_config_files,
    pack_user_data,
    unpack_user_data,
    user_data_texts,
)

SCRIPT = "echo hello\n"


def _document() -> str:
    gz = base64.b64encode(gzip.compress(SCRIPT.encode())).decode()
    b64 = base64.b64encode(SCRIPT.encode()).decode()
    files = [
        {"path": "/plain", "content": SCRIPT},
        {"path": "/b64", "encoding": "b64", "content": b64},
        {"path": "/base64", "encoding": "base64", "content": b64},
        # cloud-init's every gzip+base64 spelling (cc_write_files.py canonicalize_extraction).
        *(
            {"path": f"/{enc}", "encoding": enc, "content": gz}
            for enc in ("gz+b64", "gz+base64", "gzip+b64", "gzip+base64")
        ),
    ]
    return "#cloud-config\n" + yaml.safe_dump({"write_files": files})


def test_packed_user_data_unpacks_to_the_same_text() -> None:
    text = _document()
    packed = pack_user_data(text, machine="pair-0")
    assert unpack_user_data(packed) == text
    assert unpack_user_data(text) == text  # plain user data is read as given


def test_every_file_reads_as_the_machine_writes_it_by_either_reader() -> None:
    packed = pack_user_data(_document(), machine="pair-0")
    files = cloud_config_files(packed)
    assert set(files.values()) == {SCRIPT}
    assert len(files) == 7
    # The lenient reader (the policy pack's) sees the document and every encoded file.
    texts = dict(user_data_texts(packed))
    assert texts[""] == _document()
    assert {where for where in texts if where} == {
        f" write_files {path}" for path in files if path != "/plain"
    }
    assert {text for where, text in texts.items() if where} == {SCRIPT}


@pytest.mark.parametrize("value", ["not base64!", "abc"])
def test_what_is_neither_plain_nor_base64_is_refused_by_the_strict_reader(value: str) -> None:
    with pytest.raises(ValueError, match="neither plain text nor base64"):
        unpack_user_data(value)
    # ... and read as it stands by the lenient one, which must judge anyone's user data.
    assert user_data_texts(value) == [("", value)]


def test_over_ec2s_limit_the_error_names_the_machine() -> None:
    noise = base64.b64encode(secrets.token_bytes(EC2_USER_DATA_LIMIT)).decode()  # no gzip gain
    with pytest.raises(UserDataTooLargeError, match="user data of tessera-1 is") as error:
        pack_user_data("#cloud-config\n# " + noise, machine="tessera-1")
    assert error.value.size > EC2_USER_DATA_LIMIT
