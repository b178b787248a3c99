"""The one exception root of ByteLocker.

Every error we raise on purpose derives from :class:`ByteLockerError`, and also
from the builtin it most resembles, so callers may catch either.  Messages are
whole sentences that name the door, pin, key or file concerned.
"""


class ByteLockerError(Exception):
    """Base class of every error ByteLocker raises on purpose."""


class ConfigError(ByteLockerError, ValueError):
    """A configuration file is missing, unreadable or invalid.

    ``problems`` holds every problem found (not only the first), each already
    phrased for facilities staff: ``door.yaml line 14: lock.unlock_seconds is
    120, but must be between 1 and 30``.
    """

    def __init__(self, message, problems=None):
        super().__init__(message)
        self.problems = list(problems) if problems else [message]


class ModelFilesMissing(ByteLockerError, FileNotFoundError):
    """A face model file could not be found; the message names the package."""


class ImageError(ByteLockerError, ValueError):
    """An image could not be read or decoded (corrupt, truncated, not an image)."""


class DatasetError(ByteLockerError, ValueError):
    """A labelled evaluation set (pairs file, image folder) is malformed or incomplete."""


class VideoError(ByteLockerError, ValueError):
    """A video file could not be opened or decoded."""


class CameraUnavailable(ByteLockerError, OSError):
    """The camera could not be opened or stopped delivering frames."""


class EndOfStream(ByteLockerError, EOFError):
    """A video file or image folder camera has no more frames (and is not looping)."""


class HardwareError(ByteLockerError, RuntimeError):
    """A hardware backend failed: wrong board, missing package, no permission."""


class StorageError(ByteLockerError, OSError):
    """A database or file store failed (disk full, corrupt file, locked)."""


class BrokerError(ByteLockerError, ConnectionError):
    """The MQTT broker could not be started or reached (not installed, port taken)."""


class MessageRejected(ByteLockerError, ValueError):
    """An MQTT payload was malformed, oversized, of the wrong schema or forged."""


class SignatureError(MessageRejected):
    """A signed enrolment update failed verification (forged, unsigned, wrong key)."""


class ReplayError(MessageRejected):
    """A signed enrolment update was not newer than what the door already holds."""


class SigningKeyError(ByteLockerError, OSError):
    """An Ed25519 signing or public key is missing, unreadable, badly protected or malformed."""


class EnrolmentError(ByteLockerError, ValueError):
    """An enrolment, revocation or erasure could not be done (no usable photo, unknown person)."""


class ModelFormatError(ByteLockerError, ValueError):
    """A model file is truncated, corrupt, or not the network layout we expect."""


class AccountError(ByteLockerError, ValueError):
    """A dashboard account could not be made: bad user name, short password, unknown role."""


class ReportError(ByteLockerError, ValueError):
    """A report was asked for with arguments that cannot work (no days, an unknown time zone)."""


class DemoError(ByteLockerError, ValueError):
    """``bytelocker demo`` cannot run as asked (e.g. a work folder that is not its own)."""
