"""Ed25519 keys and canonical JSON signing of enrolment updates."""

import base64
import os
import stat

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bytelocker import signing
from bytelocker.cli import main
from bytelocker.errors import MessageRejected, SignatureError, SigningKeyError


@pytest.fixture
def key():
    return Ed25519PrivateKey.generate()


@pytest.fixture
def pinned(key):
    return signing.parse_public_keys(signing.public_key_b64(key))


BODY = {"schema": 1, "kind": "change", "version": 7, "target": "all", "op": "remove", "person": {"id": "e1234"}}


def test_keys_init_writes_private_key_readable_only_by_owner(tmp_path):
    path = tmp_path / "keys" / "signing-key"
    public = signing.init_signing_key(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(base64.b64decode(public)) == 32
    assert signing.public_key_b64(signing.load_signing_key(path)) == public


def test_keys_init_refuses_to_overwrite_an_existing_key(tmp_path):
    path = tmp_path / "signing-key"
    signing.init_signing_key(path)
    with pytest.raises(SigningKeyError, match="already exists"):
        signing.init_signing_key(path)


def test_signing_key_readable_by_others_is_refused(tmp_path):
    path = tmp_path / "signing-key"
    signing.init_signing_key(path)
    os.chmod(path, 0o644)
    with pytest.raises(SigningKeyError, match="chmod 600"):
        signing.load_signing_key(path)


def test_missing_signing_key_error_names_the_file(tmp_path):
    with pytest.raises(SigningKeyError, match="nothing-here"):
        signing.load_signing_key(tmp_path / "nothing-here")


def test_signing_key_path_comes_from_environment_then_systemd_credentials(tmp_path, monkeypatch):
    monkeypatch.delenv(signing.KEY_ENV, raising=False)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert signing.signing_key_path() == str(tmp_path / "signing-key")
    monkeypatch.setenv(signing.KEY_ENV, "/run/keys/central")
    assert signing.signing_key_path() == "/run/keys/central"


def test_keys_init_command_prints_public_key_for_door_yaml(tmp_path, capsys):
    path = tmp_path / "signing-key"
    assert main(["keys", "init", "--key", str(path)]) == 0
    out = capsys.readouterr().out
    public = signing.public_key_b64(signing.load_signing_key(path))
    assert f"central_public_key: {public}" in out
    assert main(["keys", "show", "--key", str(path)]) == 0
    assert capsys.readouterr().out.strip() == public


def test_signed_body_verifies_with_pinned_key(key, pinned):
    assert signing.verify_bytes(signing.sign_bytes(BODY, key), pinned) == BODY


def test_body_changed_after_signing_fails(key, pinned):
    envelope = signing.sign(BODY, key)
    envelope["body"] = dict(BODY, person={"id": "someone-else"})
    with pytest.raises(SignatureError):
        signing.verify(envelope, pinned)


def test_signature_from_another_key_fails(pinned):
    with pytest.raises(SignatureError, match="does not verify"):
        signing.verify_bytes(signing.sign_bytes(BODY, Ed25519PrivateKey.generate()), pinned)


def test_unsigned_envelope_fails(pinned):
    with pytest.raises(SignatureError, match="not signed"):
        signing.verify({"body": BODY}, pinned)


def test_any_of_several_pinned_keys_verifies_during_rotation(key):
    new = Ed25519PrivateKey.generate()
    pinned = signing.parse_public_keys(f"{signing.public_key_b64(key)}, {signing.public_key_b64(new)}")
    assert signing.verify_bytes(signing.sign_bytes(BODY, key), pinned) == BODY
    assert signing.verify_bytes(signing.sign_bytes(BODY, new), pinned) == BODY


def test_malformed_pinned_key_is_refused():
    with pytest.raises(SigningKeyError, match="not a base64 Ed25519 public key"):
        signing.parse_public_keys("bm90IGEga2V5")
    with pytest.raises(SigningKeyError, match="No central public key"):
        signing.parse_public_keys(None)


def test_canonical_json_does_not_depend_on_key_order():
    a = {"b": [1, {"y": 2, "x": "é"}], "a": None}
    b = {"a": None, "b": [1, {"x": "é", "y": 2}]}
    assert signing.canonical_json(a) == signing.canonical_json(b) == '{"a":null,"b":[1,{"x":"é","y":2}]}'.encode()


def test_floats_are_never_signed(key):
    with pytest.raises(TypeError):
        signing.sign({"version": 1.5}, key)


def test_floats_slipped_into_an_envelope_are_rejected(key, pinned):
    envelope = signing.sign(BODY, key)
    envelope["body"] = dict(BODY, version=7.0)
    with pytest.raises(MessageRejected):
        signing.verify(envelope, pinned)


@pytest.mark.parametrize("payload", [b"", b"{", b"\xff\xfe", b"[]", b'{"body": 3}', b"NaN"])
def test_garbled_payload_is_rejected_as_malformed(pinned, payload):
    with pytest.raises(MessageRejected):
        signing.verify_bytes(payload, pinned)
