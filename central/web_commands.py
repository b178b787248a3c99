"""``bytelocker central web`` (serve the staff dashboard) and ``bytelocker central add-user``.

Both live under ``bytelocker central``, whose parser :mod:`central.commands`
builds; it calls :func:`register_central` with its subparsers.  Imports of
Flask and waitress wait until a command runs, so ``bytelocker --help`` stays
quick.
"""

import getpass
import logging
import sys

from bytelocker.errors import AccountError, ConfigError

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = "/etc/bytelocker/central.yaml"


def register_central(central_subparsers):
    """Add ``web`` and ``add-user`` to the subparsers of ``bytelocker central``."""
    p = central_subparsers.add_parser(
        "web", help="serve the staff dashboard (loopback by default) until stopped",
        description="Serve the staff dashboard with waitress on web.host:web.port of central.yaml. "
                    "Put nginx with TLS in front of it (docs/dashboard.md).")
    p.add_argument("--config", "-c", default=DEFAULT_CONFIG, help=f"central.yaml (default {DEFAULT_CONFIG})")
    p.set_defaults(func=cmd_web)

    p = central_subparsers.add_parser(
        "add-user", help="create a dashboard account, or set a new password and role for one",
        description="Create a dashboard account (or reset an existing one's password and role). "
                    "The password is asked for twice, or read from standard input with --password-stdin.")
    p.add_argument("username", metavar="NAME", help="the user name (letters, digits, _ . @ -)")
    p.add_argument("--role", choices=("viewer", "admin"), required=True,
                   help="viewer reads every page; admin also enrols, revokes and forgets")
    p.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    p.add_argument("--config", "-c", default=DEFAULT_CONFIG, help=f"central.yaml (default {DEFAULT_CONFIG})")
    p.set_defaults(func=cmd_add_user)


def open_central(config_path):
    """Load central.yaml, register every central table and open the database; return the config."""
    from central.db import open_database
    from config import secrets
    from config.loader import load_central_config

    # Imported for their @register: open_database creates every table.
    import central.clusters  # noqa: F401
    import central.registry  # noqa: F401
    import central.store  # noqa: F401
    import central.web.auth  # noqa: F401

    config = load_central_config(config_path)
    password = secrets.read_secret(secrets.DATABASE_PASSWORD.name, secrets.DATABASE_PASSWORD.env_var)
    open_database(config.database.url, password)
    return config


def _read_password(from_stdin):
    if from_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    if not sys.stdin.isatty():
        raise AccountError("No terminal to ask for the password on; pipe it in with --password-stdin.")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Same password again: ") != first:
        raise AccountError("The two passwords differ; nothing was changed.")
    return first


def cmd_add_user(args):
    """``bytelocker central add-user NAME --role admin|viewer``."""
    from central.web import auth

    auth.check_username(args.username)
    password = _read_password(args.password_stdin)
    auth.check_password(password)
    open_central(args.config)
    user, created = auth.set_user(args.username, password, args.role)
    print(f"{'Created' if created else 'Updated'} dashboard user {user.username} ({user.role}).")
    return 0


def cmd_web(args):
    """``bytelocker central web -c central.yaml``: serve the dashboard until SIGTERM/SIGINT."""
    import signal
    import threading

    from central.web import create_app
    from central.web.auth import WebUser
    from central.web.server import DashboardServer

    config = open_central(args.config)
    web = config.web
    if not web.enabled:
        raise ConfigError(f"{args.config}: web.enabled is false, so the dashboard is not served.")
    if not WebUser.select().exists():
        logger.warning("The dashboard has no users yet: add one with "
                       "'bytelocker central add-user NAME --role admin -c %s'.", args.config)
    if web.host not in ("127.0.0.1", "::1", "localhost") and not web.cookie_secure:
        logger.warning("The dashboard listens on %s without web.cookie_secure; put it behind TLS "
                       "(docs/dashboard.md).", web.host)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    app = create_app(config)
    try:
        server = DashboardServer(app, host=web.host, port=web.port, threads=web.threads,
                                 behind_proxy=web.behind_proxy).start()
    except OSError as exc:
        raise ConfigError(f"{args.config}: cannot listen on {web.host}:{web.port} "
                          f"(web.host, web.port): {exc.strerror or exc}.") from exc
    stop.wait()
    server.stop()
    return 0
