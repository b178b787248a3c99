"""Ed25519 signing of enrolment updates, shared by central and the doors.

Central signs every enrolment update with one private key; each door pins the
matching public key (or several, during a key rotation) and applies nothing
that does not verify.  Whoever can publish to the broker cannot forge a
signature, so cannot add a face that opens a door.

What is signed is the *canonical JSON* of the update's body: keys sorted, no
whitespace, UTF-8, no floats (descriptors travel as base64 of little-endian
float32), so both sides derive the same bytes from the same data.  The body
is re-canonicalised from the parsed JSON on the door, so what is verified is
exactly what gets applied.

The private key is a PKCS#8 PEM file, mode 0600, whose path comes from
``$BYTELOCKER_SIGNING_KEY`` or the systemd credential ``signing-key``, never
from the YAML.  Keys are never logged.
"""

import base64
import binascii
import hashlib
import json
import logging
import os
import stat

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bytelocker.errors import MessageRejected, SignatureError, SigningKeyError

logger = logging.getLogger(__name__)

KEY_ENV = "BYTELOCKER_SIGNING_KEY"
CREDENTIAL_NAME = "signing-key"
DEFAULT_KEY_PATH = "/etc/bytelocker/credentials/signing-key"

# Prefixed to every signed message so a signature made for enrolment updates
# can never be passed off as a signature over anything else we may sign later.
DOMAIN = b"bytelocker-enrolment-v1\n"
# Area passages (anti-passback across door units) are signed with the same
# key under their own domain, so a passage can never verify as an enrolment
# update and an update never as a passage.
PASSAGE_DOMAIN = b"bytelocker-passage-v1\n"


def signing_key_path(path=None):
    """Where the private key lives: ``path``, else ``$BYTELOCKER_SIGNING_KEY``,
    else ``$CREDENTIALS_DIRECTORY/signing-key`` (systemd), else
    ``/etc/bytelocker/credentials/signing-key``."""
    if path:
        return os.fspath(path)
    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV]
    if os.environ.get("CREDENTIALS_DIRECTORY"):
        return os.path.join(os.environ["CREDENTIALS_DIRECTORY"], CREDENTIAL_NAME)
    return DEFAULT_KEY_PATH


def init_signing_key(path):
    """Create a new private key file at ``path`` (mode 0600); return the public key as base64.

    Refuses to overwrite an existing file: replacing central's key locks out
    every door that pinned the old one (see docs/enrolment.md on rotation).
    """
    path = os.fspath(path)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        # O_EXCL with mode 0600 so the key is never readable by others, not even briefly.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SigningKeyError(f"The signing key {path} already exists; refusing to overwrite it.") from None
    except OSError as exc:
        raise SigningKeyError(f"Cannot create the signing key {path}: {exc.strerror or exc}.") from exc
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return public_key_b64(key)


def load_signing_key(path=None):
    """Load central's private key from :func:`signing_key_path`.

    Raises :class:`SigningKeyError` if the file is missing, readable by group
    or others, or not an Ed25519 PEM key.
    """
    path = signing_key_path(path)
    try:
        mode = os.stat(path).st_mode
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise SigningKeyError(
            f"Cannot read the signing key {path}: {exc.strerror or exc}. Create it with "
            f"'bytelocker keys init' or point ${KEY_ENV} at it."
        ) from exc
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    # systemd sets the modes of its credential files itself; check only ours.
    managed = bool(creds) and os.path.dirname(os.path.abspath(path)) == os.path.abspath(creds)
    if not managed and stat.S_IMODE(mode) & 0o077:
        raise SigningKeyError(
            f"The signing key {path} is readable by other users (mode {stat.S_IMODE(mode):o}); "
            f"run 'chmod 600 {path}'."
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"The signing key {path} is not a valid unencrypted PEM private key.") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"The signing key {path} is not an Ed25519 key.")
    return key


def public_key_b64(private_key):
    """The raw 32-byte public key of ``private_key``, base64: what door.yaml pins."""
    raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def key_id(public_key):
    """A short, stable fingerprint of a public key (hex), for logs and rotation."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def parse_public_keys(value):
    """Return the pinned :class:`Ed25519PublicKey` list from base64 text.

    ``value`` is one key, several separated by commas or spaces (during a
    rotation), or a list of such strings.
    """
    if value is None:
        raise SigningKeyError("No central public key is pinned; set door.central_public_key in door.yaml.")
    items = value if isinstance(value, (list, tuple)) else [value]
    keys = []
    for item in items:
        for text in str(item).replace(",", " ").split():
            try:
                raw = base64.b64decode(text, validate=True)
                keys.append(Ed25519PublicKey.from_public_bytes(raw))
            except (binascii.Error, ValueError):
                raise SigningKeyError(
                    f"The central public key {text[:12]}... is not a base64 Ed25519 public key (32 bytes)."
                ) from None
    if not keys:
        raise SigningKeyError("No central public key is pinned; set door.central_public_key in door.yaml.")
    return keys


def canonical_json(obj):
    """The canonical UTF-8 bytes of ``obj``: sorted keys, no whitespace, no floats."""
    _reject_floats(obj)
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def _reject_floats(obj):
    # Float text differs across languages and versions; signing it would make
    # verification depend on the JSON library.
    if isinstance(obj, float):
        raise TypeError("signed documents must not contain floats")
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError("signed documents must have string keys")
            _reject_floats(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _reject_floats(v)


def sign(body, private_key, *, domain=DOMAIN):
    """Return the signed envelope ``{"body", "key_id", "signature"}`` of dict ``body``.

    ``domain`` says what kind of message this is (:data:`DOMAIN` for
    enrolment updates, :data:`PASSAGE_DOMAIN` for area passages); the
    verifier must name the same one.
    """
    signature = private_key.sign(domain + canonical_json(body))
    return {
        "body": body,
        "key_id": key_id(private_key.public_key()),
        "signature": base64.b64encode(signature).decode("ascii"),
    }


def sign_bytes(body, private_key, *, domain=DOMAIN):
    """:func:`sign`, serialised to the bytes to publish."""
    return canonical_json(sign(body, private_key, domain=domain))


def verify(envelope, public_keys, *, domain=DOMAIN):
    """Return the body of ``envelope`` if its signature verifies with one of ``public_keys``.

    ``domain`` must be the one the message was signed under (see :func:`sign`).

    Raises :class:`SignatureError` for a missing, malformed or wrong signature
    and :class:`MessageRejected` for an envelope of the wrong shape.
    """
    if not isinstance(envelope, dict) or not isinstance(envelope.get("body"), dict):
        raise MessageRejected("The update is not a signed envelope with a 'body' object.")
    signature = envelope.get("signature")
    if not isinstance(signature, str) or not signature:
        raise SignatureError("The update is not signed.")
    try:
        raw_signature = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("The update's signature is not valid base64.") from None
    try:
        message = domain + canonical_json(envelope["body"])
    except (TypeError, ValueError):
        raise MessageRejected("The update's body contains values that are never signed (floats).") from None
    for key in public_keys:
        try:
            key.verify(raw_signature, message)
        except InvalidSignature:
            continue
        return envelope["body"]
    raise SignatureError(
        f"The update's signature (key {str(envelope.get('key_id'))[:16]}) does not verify with any pinned "
        "central public key."
    )


def verify_bytes(payload, public_keys, *, domain=DOMAIN):
    """Parse the JSON ``payload`` and :func:`verify` it under ``domain``; return the body."""
    try:
        envelope = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError):
        # RecursionError: a few hundred nested brackets, which no signed body has.
        raise MessageRejected("The update is not valid JSON (truncated, garbled or absurdly nested).") from None
    return verify(envelope, public_keys, domain=domain)
