"""The shared paho client helpers: first connection retries."""

import logging
import threading
import time

from bytelocker import broker_link
from config.mqtt import MqttSection


class RefusingClient:
    """Stands in for paho's client where only connect() matters: the broker is down."""

    def __init__(self):
        self.tries = []

    def connect(self, *args, **kwargs):
        self.tries.append(time.monotonic())
        raise ConnectionRefusedError(111, "Connection refused")


def test_first_connection_backs_off_and_logs_once_while_the_broker_is_down(caplog):
    caplog.set_level(logging.INFO, logger="bytelocker.broker_link")
    # Shorter waits than door.yaml allows (1 s at least), to keep the test quick.
    section = MqttSection().model_copy(update={"host": "127.0.0.1", "port": 1, "reconnect_min_seconds": 0.1,
                                               "reconnect_max_seconds": 0.4})
    client, stop = RefusingClient(), threading.Event()
    runner = threading.Thread(target=broker_link.run_forever, args=(client, section, stop), kwargs={"who": "Test"})
    runner.start()
    time.sleep(1.6)
    stop.set()
    runner.join(5)
    gaps = [b - a for a, b in zip(client.tries, client.tries[1:])]
    # 0.1, 0.2, 0.4, 0.4 ...: doubling to the maximum, not a try every 0.1 s.
    assert 4 <= len(client.tries) <= 7, client.tries
    assert gaps[1] > gaps[0] * 1.5 and max(gaps) < 0.6
    assert caplog.text.count("cannot reach broker") == 1
