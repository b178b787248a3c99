"""The MQTT contract between doors and central: topics, payloads, limits.

Both sides import this module; ``docs/mqtt.md`` documents the same contract
for people.  Every payload is JSON with a ``schema`` version.  QoS 1
everywhere, so every subscriber must survive duplicates (events carry a UUID
``event_id``).
"""

SCHEMA_VERSION = 1
QOS = 1
DEFAULT_PREFIX = "bytelocker"

# Largest payload central accepts on any topic, bytes.
MAX_PAYLOAD_BYTES = 256 * 1024

EVENT_TYPES = (
    "granted",
    "denied",
    "unidentified",
    "door_forced",
    "door_held_open",
    "door_held_open_cleared",
    "exit_button",
    "door_status",
)

AVAILABLE_ONLINE = "online"
AVAILABLE_OFFLINE = "offline"
AVAILABLE_STOPPED = "stopped"


def door_topic(prefix, door_id, leaf):
    """``<prefix>/doors/<door_id>/<leaf>``."""
    return f"{prefix.rstrip('/')}/doors/{door_id}/{leaf}"


def events_topic(prefix, door_id):
    return door_topic(prefix, door_id, "events")


def status_topic(prefix, door_id):
    return door_topic(prefix, door_id, "status")


def available_topic(prefix, door_id):
    return door_topic(prefix, door_id, "available")


def all_doors_filter(prefix, leaf="+"):
    """Subscription filter for ``leaf`` of every door."""
    return f"{prefix.rstrip('/')}/doors/+/{leaf}"


def door_id_from_topic(prefix, topic):
    """Return ``door_id`` from ``<prefix>/doors/<door_id>/<leaf>``, or None."""
    parts = topic.split("/")
    base = prefix.rstrip("/").split("/")
    if len(parts) != len(base) + 3 or parts[: len(base)] != base or parts[len(base)] != "doors":
        return None
    return parts[len(base) + 1]
