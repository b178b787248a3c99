"""The base class of every config section, and the shape of a config problem."""

import os
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict

NO_VALUE = object()
"""Marks a :class:`Problem` about a key that has no value to show (missing, or a secret)."""


class Section(BaseModel):
    """A YAML section: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class Problem(NamedTuple):
    """One thing wrong with a config file, before it is phrased for staff.

    The loader turns it into ``door.yaml line 14: lock.unlock_seconds is 120,
    but must be between 1 and 30`` by looking up the line of ``loc``.
    """

    loc: tuple
    """Key path, like ``("hardware", "lock", "pin")``; ``()`` for the whole file."""
    expectation: str
    """What is wrong, phrased to follow "is VALUE, but ...", like "must be at most 30"."""
    value: Any = NO_VALUE
    """The offending value, or :data:`NO_VALUE` to leave it out."""


def absolute_path(value, example):
    """``value`` if it is an absolute path, else ValueError showing ``example``.

    The services run in their own working directories (under a read-only
    root), so a relative folder would be a different folder for each process.
    """
    if not os.path.isabs(value):
        raise ValueError(f"must be an absolute path, starting with '/', like {example}")
    return value
