"""The staff dashboard: central's web pages, behind a login.

Server-rendered Flask templates, no front-end build.  :func:`create_app`
builds the app from a :class:`~config.central.CentralConfig` whose database
is already open (:func:`central.db.open_database`); ``bytelocker central web``
(:mod:`central.web_commands`) serves it with waitress on loopback.

It shows biometric data, so: every page needs a login; sessions are signed
cookies (HttpOnly, SameSite=Lax, Secure when ``web.cookie_secure``); every
form carries a CSRF token; snapshots are served only through a view that
checks the file is inside ``storage.snapshot_dir``; Jinja autoescapes
everything doors send; and the Content-Security-Policy allows no inline
script or style.
"""

import datetime as dt
import logging
import os
import secrets as _random
import threading

from flask import Flask
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect

from central.db import database
from central.store import utcnow
from central.web import auth

logger = logging.getLogger(__name__)

SECRET_KEY_NAME = "web-secret-key"
SECRET_KEY_ENV = "BYTELOCKER_WEB_SECRET_KEY"
# Enrolment uploads: a dozen phone photos.
MAX_UPLOAD_BYTES = 64 * 1024 * 1024

SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def read_secret_key():
    """The session signing key from ``$BYTELOCKER_WEB_SECRET_KEY`` or the systemd credential, or None."""
    from config import secrets

    return secrets.read_secret(SECRET_KEY_NAME, SECRET_KEY_ENV)


def create_app(config, *, secret_key=None, checker=None, clock=None):
    """Return the dashboard's Flask app for ``config`` (a :class:`~config.central.CentralConfig`).

    :param secret_key: signs session cookies and CSRF tokens.  None reads
        :func:`read_secret_key`; when that finds nothing a random key is made,
        so logins do not survive a restart (logged as a warning).
    :param checker: a :class:`central.enrolment.PhotoChecker` for enrolment
        uploads; None loads one (and the face models) on the first upload.
    :param clock: returns "now" as a naive UTC datetime, for what the pages
        show as today, on site now and silent doors; None is the real clock.
        Tests pin it to a time of day.
    """
    web = config.web
    app = Flask(__name__)
    key = secret_key or read_secret_key()
    if not key:
        logger.warning("No dashboard secret key (%s or the systemd credential '%s'); using a random one, "
                       "so every login ends when the dashboard restarts.", SECRET_KEY_ENV, SECRET_KEY_NAME)
        key = _random.token_hex(32)
    lifetime = dt.timedelta(hours=web.session_hours)
    app.config.update(
        SECRET_KEY=key,
        SESSION_COOKIE_NAME="bytelocker_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=web.cookie_secure,
        PERMANENT_SESSION_LIFETIME=lifetime,
        WTF_CSRF_TIME_LIMIT=int(lifetime.total_seconds()),
        # Flask-WTF checks the Referer on HTTPS, which nginx passes through.
        WTF_CSRF_SSL_STRICT=True,
        MAX_CONTENT_LENGTH=MAX_UPLOAD_BYTES,
        TEMPLATES_AUTO_RELOAD=False,
    )
    if web.behind_proxy:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)

    app.extensions["bytelocker"] = {
        "config": config,
        "limiter": auth.LoginLimiter(web.login_failures_max, web.login_window_minutes * 60),
        "checker": checker,
        "checker_lock": threading.Lock(),
        "clock": clock or utcnow,
        "snapshot_dir": os.path.realpath(config.storage.snapshot_dir),
    }

    CSRFProtect(app)
    login = LoginManager(app)
    login.login_view = "dash.login"
    login.login_message = "Please log in to see this page."
    login.session_protection = "basic"
    login.user_loader(auth.load_user)

    @app.before_request
    def _connect():
        database.connect(reuse_if_open=True)

    @app.teardown_request
    def _close(exc):
        # One connection per request and thread: waitress threads never share one.
        if not database.is_closed():
            database.close()

    @app.after_request
    def _headers(response):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        # Pages show faces and names: no shared or back-button caches.
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    from central.web import views

    app.register_blueprint(views.bp)
    app.jinja_env.filters["when"] = views.format_when
    app.jinja_env.filters["duration"] = views.format_duration
    return app
