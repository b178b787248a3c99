"""Building and running paho-mqtt clients from an ``mqtt`` config section.

Every MQTT client in ByteLocker (the door's publisher and sync, central's
collector, sync and alerts) is made here, so TLS, credentials and reconnect
back-off are set up the same way everywhere: paho 2.x, callback API v2,
MQTT 5.
"""

import logging
import ssl

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from config.secrets import MQTT_TLS_KEY, secret_path

logger = logging.getLogger(__name__)


def make_client(mqtt_section, client_id, *, password=None, manual_ack=False):
    """A paho client for the broker in ``mqtt_section``; callbacks are the caller's.

    :param password: the broker password (from the environment or a systemd
        credential; never logged).
    :param manual_ack: acknowledge received QoS 1 messages only when the
        caller says so (central acknowledges after its database commit).
    """
    m = mqtt_section
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5, manual_ack=manual_ack)
    if m.username:
        client.username_pw_set(m.username, password)
    if m.tls:
        # The client key may be a systemd credential rather than a path in the YAML.
        keyfile = m.key_file or secret_path(MQTT_TLS_KEY.name, MQTT_TLS_KEY.env_var)
        client.tls_set(ca_certs=m.ca_file, certfile=m.cert_file, keyfile=keyfile,
                       tls_version=ssl.PROTOCOL_TLS_CLIENT)
    client.reconnect_delay_set(min_delay=max(1, int(round(m.reconnect_min_seconds))),
                               max_delay=max(1, int(round(m.reconnect_max_seconds))))
    # A callback that raises would otherwise end paho's network thread, and a
    # persistent session hands the same message back after every reconnect:
    # one bad message must cost that message, never the link.  Our callbacks
    # catch what they expect; this is the backstop, logged through paho's logger.
    client.suppress_exceptions = True
    client.on_log = _log_callback_failures
    return client


def _log_callback_failures(client, userdata, level, message):
    # Only what suppress_exceptions swallowed: paho's other log lines are
    # connection chatter that our own callbacks already report.
    if message.startswith("Caught exception in"):
        logger.error("An MQTT callback failed and its message was dropped: %s", message)


def session_properties(session_expiry_seconds):
    """CONNECT properties asking the broker to keep our session (and queue QoS 1) this long."""
    props = Properties(PacketTypes.CONNECT)
    if session_expiry_seconds:
        props.SessionExpiryInterval = int(session_expiry_seconds)
    return props


def connect_async(client, mqtt_section, *, session_expiry_seconds=0):
    """Start connecting in the background; paho's own loop reconnects after that.

    ``session_expiry_seconds`` > 0 asks for a persistent session
    (``clean_start`` false), so the broker queues QoS 1 messages while away.
    """
    client.connect_async(mqtt_section.host, mqtt_section.port, keepalive=mqtt_section.keepalive_seconds,
                         clean_start=not session_expiry_seconds,
                         properties=session_properties(session_expiry_seconds))
    client.loop_start()


def disconnect(client):
    """Disconnect a client started with :func:`connect_async` and stop its network thread."""
    client.disconnect()
    client.loop_stop()


def run_forever(client, mqtt_section, stop_event, *, who, session_expiry_seconds=0):
    """Connect and run ``client``'s network loop on this thread until ``stop_event`` is set.

    The first connection is retried after ``reconnect_min_seconds``, the
    wait doubling up to ``reconnect_max_seconds`` (as paho does afterwards);
    the failure is logged when it starts and when its reason changes, not on
    every try, so a broker that is down does not flood the journal.  Returns
    when the caller disconnects the client after setting the stop event.
    """
    m = mqtt_section
    wait, last_reason, tries = m.reconnect_min_seconds, None, 0
    while not stop_event.is_set():
        try:
            client.connect(m.host, m.port, m.keepalive_seconds, clean_start=not session_expiry_seconds,
                           properties=session_properties(session_expiry_seconds))
        except (OSError, ValueError) as exc:
            tries += 1
            if str(exc) != last_reason:
                logger.warning("%s cannot reach broker %s:%s (%s); retrying, at most every %.0f s.",
                               who, m.host, m.port, exc, m.reconnect_max_seconds)
                last_reason = str(exc)
            if stop_event.wait(wait):
                break
            wait = min(wait * 2, m.reconnect_max_seconds)
            continue
        if tries:
            logger.info("%s reached broker %s:%s after %d failed tries.", who, m.host, m.port, tries)
        client.loop_forever(retry_first_connection=True)
