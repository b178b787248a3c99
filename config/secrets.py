"""Secrets: read from the environment or systemd credentials, never from YAML.

A secret is found, in this order, in

1. the environment variable named for it (``BYTELOCKER_MQTT_PASSWORD``), or
2. the file ``$CREDENTIALS_DIRECTORY/<name>`` (or ``.../bytelocker_<name>``),
   which systemd fills for the service.  Our units load the whole folder
   ``/etc/bytelocker/credentials/`` (``LoadCredential=bytelocker:/etc/...``,
   which names each file ``bytelocker_<file name>``), so staff drop
   ``/etc/bytelocker/credentials/mqtt-password`` there (root, mode 0600) and
   restart; the service user itself cannot read that folder.

File secrets such as a TLS private key are handed over as a *path*
(:func:`secret_path`), because the TLS libraries want a file name.

The YAML files must not hold secrets: :func:`find_secret_keys` finds keys that
look like one so the loader can tell staff where the value belongs instead.
"""

import os
import re
from typing import NamedTuple
from urllib.parse import parse_qsl, urlsplit


class Secret(NamedTuple):
    """A secret ByteLocker knows by name."""

    name: str
    """Credential name: ``LoadCredential=<name>:...`` and ``$CREDENTIALS_DIRECTORY/<name>``."""
    env_var: str
    """Environment variable that may hold it instead (its value, or for files, its path)."""
    what: str
    """What it is, for messages to staff."""
    is_file: bool = False
    """True if the secret is a file (a key) handed over by path."""
    @property
    def credential_file(self):
        """Where staff put it on disk for the service to load as a credential."""
        return f"{CREDENTIALS_FOLDER}/{self.name}"

    def hint(self):
        """Where staff should put this secret, as a phrase."""
        return (f"the environment variable {self.env_var} or the systemd credential "
                f"file {self.credential_file}")


CREDENTIALS_FOLDER = "/etc/bytelocker/credentials"
CREDENTIAL_PREFIX = "bytelocker_"
"""Prefix systemd gives credentials loaded from a folder (``LoadCredential=bytelocker:FOLDER``)."""


MQTT_PASSWORD = Secret("mqtt-password", "BYTELOCKER_MQTT_PASSWORD", "the MQTT broker password")
MQTT_TLS_KEY = Secret("mqtt-tls-key", "BYTELOCKER_MQTT_TLS_KEY",
                      "the private key of this unit's MQTT client certificate", is_file=True)
SIGNING_KEY = Secret("signing-key", "BYTELOCKER_SIGNING_KEY",
                     "central's Ed25519 signing key", is_file=True)
DATABASE_PASSWORD = Secret("database-password", "BYTELOCKER_DATABASE_PASSWORD",
                           "the PostgreSQL password of the central database")

WEB_SECRET_KEY = Secret("web-secret-key", "BYTELOCKER_WEB_SECRET_KEY",
                        "the staff dashboard's session key")

KNOWN_SECRETS = {s.name: s for s in (MQTT_PASSWORD, MQTT_TLS_KEY, SIGNING_KEY, DATABASE_PASSWORD,
                                     WEB_SECRET_KEY)}

# Which known secret a YAML key most likely meant, so the message can name the
# right variable.  Checked in order against the dotted key path.
_KEY_TO_SECRET = (
    (re.compile(r"mqtt\..*(key|keyfile)$"), MQTT_TLS_KEY),
    (re.compile(r"mqtt\."), MQTT_PASSWORD),
    (re.compile(r"sign"), SIGNING_KEY),
    (re.compile(r"database\."), DATABASE_PASSWORD),
    (re.compile(r"web\."), WEB_SECRET_KEY),
)

# Key names that hold a secret.  'public_key' is fine, and so is a *path* to a
# key file such as mqtt.key_file (the file's permissions protect it).
SECRET_KEY_NAME = re.compile(
    r"(^|_)(password|passwd|passphrase|secret|token|api_?key|private_?key|signing_?key)($|_)",
    re.IGNORECASE,
)


# Query parameters of a URL that carry a password (libpq's ``password`` and
# ``sslpassword``); a ``token=`` is left to its own key's check.
_QUERY_PASSWORD_KEY = re.compile(r"pass(word|wd)$", re.IGNORECASE)


def credentials_dir():
    """The systemd credentials folder of this process, or None outside systemd."""
    return os.environ.get("CREDENTIALS_DIRECTORY") or None


def read_secret(name, env_var, *, required=False):
    """Return the secret ``name`` as text, or None if it is not available.

    :param name: the credential name, e.g. ``"mqtt-password"``.
    :param env_var: the environment variable checked first.
    :param required: raise :class:`~bytelocker.errors.ConfigError` instead of
        returning None.

    One trailing newline is removed (``echo secret > file`` adds one).
    """
    value = os.environ.get(env_var)
    if value:
        return value
    for path in _credential_files(name):
        try:
            with open(path, encoding="utf-8") as fh:
                value = fh.read()
        except FileNotFoundError:
            continue
        except OSError as exc:
            from bytelocker.errors import ConfigError

            raise ConfigError(f"The systemd credential '{name}' cannot be read: "
                              f"{exc.strerror or exc}.") from exc
        if value:
            return value[:-1] if value.endswith("\n") else value
    if required:
        from bytelocker.errors import ConfigError

        raise ConfigError(f"The secret '{name}' is missing: set {env_var} or give the systemd "
                          f"credential '{name}' (LoadCredential={name}:/etc/bytelocker/credentials/{name}).")
    return None


def secret_path(name, env_var, *, required=False):
    """Return the path of a file secret (a private key), or None if none is given.

    The environment variable holds a path; otherwise the credential file itself
    is the path.  The file must exist.
    """
    candidates = [os.environ[env_var]] if os.environ.get(env_var) else []
    candidates.extend(_credential_files(name))
    for path in candidates:
        if os.path.isfile(path):
            return path
    if required:
        from bytelocker.errors import ConfigError

        raise ConfigError(f"The key file '{name}' is missing: set {env_var} to its path or give "
                          f"the systemd credential '{name}'.")
    return None


def _credential_files(name):
    folder = credentials_dir()
    if not folder:
        # Outside systemd (an administrator running 'sudo bytelocker people'):
        # the files the units load, which check-config already counts as given.
        folder = CREDENTIALS_FOLDER
    return [os.path.join(folder, name), os.path.join(folder, CREDENTIAL_PREFIX + name)]


def is_available(secret):
    """True if ``secret`` (a :class:`Secret`) can be read now, or will be by the service.

    Besides what this process can read, a file in the credentials folder
    counts: the unit hands it over at start, and an administrator running
    ``check-config`` as root sees it there.
    """
    if os.path.isfile(secret.credential_file):
        return True
    if secret.is_file:
        return secret_path(secret.name, secret.env_var) is not None
    return read_secret(secret.name, secret.env_var) is not None


def secret_for_key(dotted):
    """The :class:`Secret` that a YAML key such as ``mqtt.password`` most likely meant, or None."""
    for pattern, secret in _KEY_TO_SECRET:
        if pattern.search(dotted):
            return secret
    return None


def looks_like_secret_key(key):
    """True if a YAML key name (``password``, ``api_token``...) is meant to hold a secret."""
    return isinstance(key, str) and bool(SECRET_KEY_NAME.search(key))


def url_has_password(value):
    """True if ``value`` is a URL with a password in it.

    Either place counts: ``postgresql://u:pw@host/db``, or a query parameter
    named like a secret (``postgresql://u@host/db?password=pw``, which libpq
    reads as well).
    """
    if not isinstance(value, str) or "://" not in value:
        return False
    try:
        parts = urlsplit(value)
        if parts.password:
            return True
        query = parse_qsl(parts.query, keep_blank_values=False)
    except ValueError:
        return False
    return any(value and _QUERY_PASSWORD_KEY.search(key) for key, value in query)


def required_secrets(config) -> list:
    """The secrets a validated config needs, as ``(key path, Secret, reason)`` tuples.

    Works on any config object by looking for the sections that need one: an
    ``mqtt`` section with a ``username`` needs the MQTT password; a ``database``
    section with a PostgreSQL URL naming a user needs its password; the central
    config (it has a ``database`` section) needs the signing key.
    """
    needed = []
    mqtt = getattr(config, "mqtt", None)
    if mqtt is not None and getattr(mqtt, "enabled", True) and getattr(mqtt, "username", None):
        needed.append((("mqtt", "username"), MQTT_PASSWORD,
                       f"mqtt.username is '{mqtt.username}'"))
    database = getattr(config, "database", None)
    if database is not None:
        url = getattr(database, "url", "") or ""
        if url.startswith("postgres") and urlsplit(url).username:
            needed.append((("database", "url"), DATABASE_PASSWORD,
                           f"database.url logs in as '{urlsplit(url).username}'"))
        needed.append(((), SIGNING_KEY, "central signs every enrolment update it sends to the doors"))
    return needed


def missing_secrets(config) -> list:
    """The :func:`required_secrets` of ``config`` that cannot be read now."""
    return [item for item in required_secrets(config) if not is_available(item[1])]

