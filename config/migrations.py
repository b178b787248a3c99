"""Config file format versions, and the chain of steps that upgrades old files.

Each file carries ``version: N``.  A file written for an older format is
upgraded in memory, one step at a time (vN -> vN+1), on the raw mapping read
from YAML and *before* validation, so staff never have to edit a working file
after an upgrade.  A file with no ``version:`` is read as version 1, the first
format that shipped.  A file newer than this ByteLocker understands is an
error, because guessing could silently drop a safety setting.

To change the format: bump ``CURRENT_VERSION`` of the config model, write one
function here that turns the previous version's mapping into the new one, and
register it in :data:`MIGRATIONS` under the version it upgrades *from*.
"""

from bytelocker import __version__

FIRST_VERSION = 1
"""The version assumed for a file without a ``version:`` key."""


class VersionProblem(Exception):
    """The file's ``version:`` cannot be used; ``loc`` and ``expectation`` say why."""

    def __init__(self, loc, value, expectation):
        super().__init__(expectation)
        self.loc = loc
        self.value = value
        self.expectation = expectation


def move_key(raw, old, new):
    """Move the setting at dotted path ``old`` to ``new`` in the mapping ``raw``.

    Missing intermediate sections are created; the key's line number (when the
    loader recorded one) moves with it, so later errors still point at the line
    staff wrote.  Returns True if something moved.
    """
    old_parts, new_parts = old.split("."), new.split(".")
    parent = raw
    for part in old_parts[:-1]:
        parent = parent.get(part) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            return False
    if old_parts[-1] not in parent:
        return False
    target = raw
    for part in new_parts[:-1]:
        if not isinstance(target.get(part), dict):
            if target.get(part) is not None:
                raise VersionProblem(tuple(new_parts[:-1]), target.get(part),
                                     f"must be a section to receive {old} (moved to {new})")
            target[part] = type(raw)()
            _copy_line(parent, old_parts[-1], target, part)
        target = target[part]
    if new_parts[-1] in target:
        raise VersionProblem(tuple(old_parts), parent[old_parts[-1]],
                             f"is now called {new}, and {new} is also set; keep only {new}")
    target[new_parts[-1]] = parent.pop(old_parts[-1])
    _copy_line(parent, old_parts[-1], target, new_parts[-1])
    return True


def _copy_line(src, src_key, dst, dst_key):
    src_lines = getattr(src, "key_lines", None)
    dst_lines = getattr(dst, "key_lines", None)
    if src_lines is not None and dst_lines is not None and src_key in src_lines:
        dst_lines.setdefault(dst_key, src_lines[src_key])


def door_1_to_2(raw):
    """Version 2 gave the site its own section: ``door.timezone`` becomes ``site.timezone``."""
    notes = []
    if move_key(raw, "door.timezone", "site.timezone"):
        notes.append("door.timezone is now site.timezone")
    return notes


MIGRATIONS = {
    # model class name -> {from_version: step}
    "DoorConfig": {1: door_1_to_2},
    "CentralConfig": {},
}


def current_version(model):
    """The format version ``model`` (a config class) reads natively, or None if unversioned."""
    field = model.model_fields.get("version")
    return None if field is None else field.default


def migrate(raw, model):
    """Upgrade the raw mapping ``raw`` in place to ``model``'s current version.

    Returns ``(version_written, notes)``: the version the file was written for
    and one note per change, for ``check-config`` to show.  Raises
    :class:`VersionProblem` if the version is not a whole number, is older
    than any known format or newer than this ByteLocker understands.
    """
    current = current_version(model)
    if current is None:
        return None, []
    written = raw.get("version", FIRST_VERSION)
    if isinstance(written, bool) or not isinstance(written, int):
        raise VersionProblem(("version",), written,
                             f"must be a whole number; this ByteLocker writes version {current}")
    if written > current:
        raise VersionProblem(("version",), written,
                             f"this ByteLocker ({__version__}) reads config versions up to {current}; "
                             "upgrade ByteLocker on this machine or use a file written for it")
    if written < FIRST_VERSION:
        raise VersionProblem(("version",), written,
                             f"must be between {FIRST_VERSION} and {current}")
    steps = MIGRATIONS.get(model.__name__, {})
    notes = []
    for version in range(written, current):
        step = steps.get(version)
        if step is None:
            raise VersionProblem(("version",), written,
                                 f"there is no upgrade from version {version} to {version + 1}; "
                                 f"rewrite the file from 'bytelocker config example'")
        notes.extend(step(raw))
    if written != current:
        raw["version"] = current
    return written, notes
