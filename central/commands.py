"""Subcommands of this package for the ``bytelocker`` command line."""


def register(subparsers):
    """Add this package's subcommands to ``subparsers``."""
