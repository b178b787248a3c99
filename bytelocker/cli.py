"""The ``bytelocker`` command line: one console script with subcommands.

Each part of the system owns its subcommands in its own ``commands`` module and
adds them here through ``register(subparsers)``; this module only wires them,
sets up logging and turns our errors into ``bytelocker: error: ...`` lines.
"""

import argparse
import importlib
import logging
import sys

from bytelocker import __version__
from bytelocker.errors import ByteLockerError

# Order is the order of ``bytelocker --help``.
COMMAND_MODULES = (
    "edge.commands",
    "hardware.commands",
    "central.commands",
    "central.people_commands",
    "config.commands",
)


def lazy(target):
    """A command function that imports ``"module:function"`` only when the command runs.

    Keeps ``bytelocker --help`` fast: face models, Flask and the database
    drivers load only for the commands that need them.
    """
    module, func = target.split(":")

    def call(args):
        return getattr(importlib.import_module(module), func)(args)

    return call


def build_parser():
    """Return the top-level argument parser with every subcommand attached."""
    parser = argparse.ArgumentParser(
        prog="bytelocker",
        description="ByteLocker face-recognition door system.",
    )
    parser.add_argument("--version", action="version", version=f"bytelocker {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def configure_logging(level):
    """Log to stdout, one key=value line per record, so journald picks it up."""
    from bytelocker import logfmt

    logfmt.configure(level)


def main(argv=None):
    """Entry point of the ``bytelocker`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if args.debug:
        level = logging.DEBUG
    elif args.verbose:
        level = logging.INFO
    else:
        level = getattr(args, "log_level", logging.WARNING)
    configure_logging(level)
    try:
        result = args.func(args)
    except ByteLockerError as exc:
        if args.debug:
            raise
        print(f"bytelocker: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
