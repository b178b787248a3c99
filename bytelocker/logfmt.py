"""One log line per event, as ``key=value`` fields, for journald and grep.

    level=info logger=edge.app door=front-door event=granted seq=41 person=alice

A message already written as ``key=value`` pairs (our habit:
``logger.info("door=%s event=%s", ...)``) is kept as fields; any other
message becomes ``msg="..."``.  Extra fields can be passed with
``logger.info("...", extra={"fields": {"fps": 14.8}})``.

Whatever a caller passes, a field whose name looks like a secret
(``password``, ``token``...) is written as ``[redacted]``, and a value that
looks like a face descriptor (a long run of numbers, an array) is left out.
Under journald (``$JOURNAL_STREAM`` set) no timestamp is written: journald
adds its own.
"""

import logging
import os
import re

from config.secrets import looks_like_secret_key

_PAIRS = re.compile(r'^(?:[A-Za-z_][\w.-]*=(?:"(?:[^"\\]|\\.)*"|\S*)(?:\s+|$))+$')
_BARE = re.compile(r"^[^\s\"=\\]+$")
_FRACTION = re.compile(r"\d\.\d")
DESCRIPTOR_NUMBERS = 16
"""A text with this many fractional numbers is taken for a face descriptor and left out."""
MAX_VALUE = 500


def quote(value):
    """A value as it appears after ``key=``: bare if it can be, otherwise quoted on one line."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if len(text) > MAX_VALUE:
        text = text[:MAX_VALUE] + "..."
    if text and _BARE.match(text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def _safe(key, value):
    if looks_like_secret_key(str(key)):
        return "[redacted]"
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return "[array omitted]"
    if isinstance(value, (list, tuple)) and len(value) >= 16 and all(
            isinstance(v, (int, float)) for v in value):
        return "[numbers omitted]"
    if isinstance(value, str) and _looks_like_descriptor(value):
        return "[numbers omitted]"
    return value


def _looks_like_descriptor(text):
    return len(_FRACTION.findall(text)) >= DESCRIPTOR_NUMBERS


def _redact_pairs(message):
    """Redact secret-looking keys inside a message already written as pairs."""
    def fix(match):
        key = match.group(1)
        return f"{key}=[redacted]" if looks_like_secret_key(key) else match.group(0)

    return re.sub(r'([A-Za-z_][\w.-]*)=("(?:[^"\\]|\\.)*"|\S*)', fix, message)


class LogfmtFormatter(logging.Formatter):
    """Format records as one ``key=value`` line each.

    :param timestamps: write ``ts=...``; default: only when not under journald.
    """

    def __init__(self, timestamps=None):
        super().__init__()
        self.timestamps = (not os.environ.get("JOURNAL_STREAM")) if timestamps is None else timestamps

    def format(self, record):
        fields = []
        if self.timestamps:
            fields.append(("ts", self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}"))
        fields.append(("level", record.levelname.lower()))
        fields.append(("logger", record.name))
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad log call must not stop the door
            message = f"{record.msg!r} (bad log arguments)"
        if _looks_like_descriptor(message):
            message = f"{record.msg if isinstance(record.msg, str) else 'message'} [numbers omitted]"
        line = " ".join(f"{key}={quote(value)}" for key, value in fields)
        if message and _PAIRS.match(message):
            line += " " + _redact_pairs(message.strip())
        elif message:
            line += f" msg={quote(message)}"
        for key, value in (getattr(record, "fields", None) or {}).items():
            line += f" {key}={quote(_safe(key, value))}"
        if record.exc_info:
            exc_type = record.exc_info[0].__name__ if record.exc_info[0] else "Exception"
            line += f" exc={quote(exc_type)} traceback={quote(self.formatException(record.exc_info))}"
        return line


def configure(level=logging.INFO, stream=None, timestamps=None):
    """Send the root logger to ``stream`` (stdout by default) in this format."""
    import sys

    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(LogfmtFormatter(timestamps=timestamps))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # peewee's DEBUG log is every SQL statement with its parameters: face
    # descriptors and person ids.  Even at --log-level debug it stays quiet.
    logging.getLogger("peewee").setLevel(max(level, logging.INFO))
    return handler
