"""Dashboard accounts: local users with Argon2-hashed passwords, two roles, login limits.

A user is a ``viewer`` (reads every page) or an ``admin`` (also enrols,
revokes, forgets and deletes stranger clusters).  Accounts are made with
``bytelocker central add-user NAME --role admin|viewer``; there is no sign-up
page.  Passwords are hashed with Argon2id (argon2-cffi's defaults) and never
logged.  Failed logins are limited per user name *and* client address
(:class:`LoginLimiter`), so one attacker cannot lock out a user from elsewhere
by guessing their password.
"""

import collections
import datetime as dt
import functools
import logging
import re
import threading
import time

import peewee as pw
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from flask import abort
from flask_login import UserMixin, current_user, login_required

from bytelocker.errors import AccountError
from central.db import BaseModel, register

logger = logging.getLogger(__name__)

ADMIN = "admin"
VIEWER = "viewer"
ROLES = (VIEWER, ADMIN)
USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD_CHARS = 10

_hasher = PasswordHasher()
# Verified when the user name is unknown, so a wrong name costs as long as a
# wrong password and the timing does not tell which user names exist.
_DUMMY_HASH = _hasher.hash("not a password of anyone")


def _utcnow():
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)


@register
class WebUser(UserMixin, BaseModel):
    """A dashboard account.  ``role`` is ``viewer`` or ``admin``."""

    username = pw.CharField(max_length=64, unique=True)
    password_hash = pw.CharField(max_length=256)
    role = pw.CharField(max_length=16, default=VIEWER)
    created_at = pw.DateTimeField(default=_utcnow)
    password_changed_at = pw.DateTimeField(default=_utcnow)
    last_login_at = pw.DateTimeField(null=True)

    class Meta:
        table_name = "web_users"

    @property
    def is_admin(self):
        return self.role == ADMIN

    def get_id(self):
        # The hash's tail is part of the session id, so a new password (or a
        # deleted and re-made account) ends every session of the old one.
        return f"{self.id}:{self.password_hash[-16:]}"


def check_username(username):
    """Raise :class:`AccountError` unless ``username`` is 1-64 letters, digits or ``_.@-``."""
    if not USERNAME_PATTERN.match(username or ""):
        raise AccountError(f"The user name {username!r} is not allowed: use 1-64 letters, digits, '_', '.', '@' or '-'.")


def check_password(password):
    """Raise :class:`AccountError` if ``password`` is too short to be worth hashing."""
    if len(password or "") < MIN_PASSWORD_CHARS:
        raise AccountError(f"The password is too short: use at least {MIN_PASSWORD_CHARS} characters.")


def set_user(username, password, role):
    """Create the account ``username`` or give it a new password and role; return ``(WebUser, created)``."""
    check_username(username)
    check_password(password)
    if role not in ROLES:
        raise AccountError(f"The role {role!r} is not known: use {' or '.join(ROLES)}.")
    hashed = _hasher.hash(password)
    user = WebUser.get_or_none(WebUser.username == username)
    if user is None:
        return WebUser.create(username=username, password_hash=hashed, role=role), True
    user.password_hash = hashed
    user.role = role
    user.password_changed_at = _utcnow()
    user.save()
    return user, False


def authenticate(username, password):
    """The :class:`WebUser` whose name and password match, or None."""
    user = WebUser.get_or_none(WebUser.username == username) if USERNAME_PATTERN.match(username or "") else None
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password or "")
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if user is None:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    user.last_login_at = _utcnow()
    user.save()
    return user


def load_user(session_id):
    """Flask-Login's user loader: the user of a session id from :meth:`WebUser.get_id`."""
    user_id, _, tail = (session_id or "").partition(":")
    if not user_id.isdigit():
        return None
    user = WebUser.get_or_none(WebUser.id == int(user_id))
    if user is None or user.password_hash[-16:] != tail:
        return None
    return user


def admin_required(view):
    """Decorator: only logged-in admins; a viewer gets 403 Forbidden."""
    @functools.wraps(view)
    @login_required
    def wrapped(*args, **kwargs):
        if not current_user.is_admin:
            logger.warning("Dashboard user %s (viewer) was refused an admin action.", current_user.username)
            abort(403)
        return view(*args, **kwargs)

    return wrapped


class LoginLimiter:
    """At most ``max_failures`` failed logins per (user name, address) within ``window`` seconds.

    Kept in memory: the dashboard is one process, and a restart forgetting
    the count costs an attacker a restart per five guesses.
    """

    MAX_KEYS = 10_000

    def __init__(self, max_failures=5, window=300.0, clock=time.monotonic):
        self.max_failures = max_failures
        self.window = window
        self._clock = clock
        self._failures = collections.defaultdict(collections.deque)
        self._lock = threading.Lock()

    def _recent(self, key):
        failures = self._failures[key]
        cutoff = self._clock() - self.window
        while failures and failures[0] < cutoff:
            failures.popleft()
        return failures

    def blocked_for(self, username, address):
        """Seconds until ``username`` may try again from ``address`` (0: now)."""
        key = ((username or "").lower(), address)
        with self._lock:
            failures = self._recent(key)
            if len(failures) < self.max_failures:
                if not failures:
                    del self._failures[key]
                return 0
            return max(1, int(failures[0] + self.window - self._clock()) + 1)

    def attempt(self, username, address):
        """Check and count one login attempt at once: seconds to wait (0: go ahead, counted as a failure).

        Counting before the password is checked closes the race in which
        parallel requests all pass :meth:`blocked_for` before any failure is
        recorded; :meth:`succeeded` clears the count.
        """
        key = ((username or "").lower(), address)
        with self._lock:
            failures = self._recent(key)
            if len(failures) >= self.max_failures:
                return max(1, int(failures[0] + self.window - self._clock()) + 1)
            self._count(key)
        return 0

    def failed(self, username, address):
        """Count one failed login."""
        with self._lock:
            self._count(((username or "").lower(), address))

    def _count(self, key):
        # self._lock is held.
        if len(self._failures) >= self.MAX_KEYS:
            # Guessing with ever new names must not grow memory without bound.
            for old in [k for k in self._failures if not self._recent(k)]:
                del self._failures[old]
        self._recent(key).append(self._clock())

    def succeeded(self, username, address):
        """Forget the failures of this user name and address."""
        with self._lock:
            self._failures.pop(((username or "").lower(), address), None)
