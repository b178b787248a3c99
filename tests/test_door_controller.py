"""The door's behaviour on the simulated backend: grants, re-lock on close, alarms, exit button.

Tests drive the simulated contact and button and assert the recorded lock
history and the events handed to ``emit``.  Pulses are 1 s (the config's
minimum); held-open alarms use the config's minimum of 5 s.
"""

import threading
import time

import pytest

from bytelocker.errors import StorageError
from config.hardware import HardwareSection
from hardware import open_hardware
from hardware.door import DoorController
from tests.waiting import eventually

TOLERANCE = 0.3


class Events:
    """A thread-safe emit() that remembers what it was given."""

    def __init__(self, fail_on=()):
        self.items = []
        self.fail_on = set(fail_on)
        self._mutex = threading.Lock()

    def __call__(self, event_type, details):
        with self._mutex:
            self.items.append((event_type, details))
        if event_type in self.fail_on:
            raise StorageError(f"outbox full; cannot store {event_type}")

    def types(self):
        with self._mutex:
            return [t for t, _ in self.items]


def section(**contact):
    contact = {"held_open_seconds": 5, "forced_window_seconds": 0.5, **contact}
    return HardwareSection(
        backend="simulated",
        lock={"unlock_seconds": 1},
        contact=contact,
        exit_button={"debounce_ms": 500},
        green_led={"pin": 5},
        red_led={"pin": 6},
        buzzer={"pin": 13},
    )


def lock_pulses(hw):
    """Lengths of the unlock pulses in the lock history (fail-secure, active-high: unlocked = 1)."""
    found, start = [], None
    for change in hw.history("lock"):
        if change.value == 1 and start is None:
            start = change.t
        elif change.value == 0 and start is not None:
            found.append(change.t - start)
            start = None
    return found + ([None] if start is not None else [])


@pytest.fixture
def door():
    config = section()
    hw = open_hardware(config, door_id="test-door")
    events = Events()
    controller = DoorController(hw, config, emit=events)
    yield hw, controller, events
    controller.close()
    hw.close()


def test_grant_gives_exactly_one_unlock_pulse_of_the_configured_length(door):
    hw, controller, events = door
    controller.grant("alice")
    assert eventually(lambda: hw.lock.is_locked, timeout=4)
    time.sleep(0.3)
    pulses = lock_pulses(hw)
    assert len(pulses) == 1
    assert pulses[0] == pytest.approx(1.0, abs=TOLERANCE)
    assert events.types() == []


def test_grant_shows_green(door):
    hw, controller, _ = door
    controller.grant("alice")
    assert hw.indicators.pattern == "granted"
    assert hw.history("green")[-1].value == 1
    assert hw.history("red")[-1].value == 0


def test_deny_shows_red_and_leaves_the_relay_alone(door):
    hw, controller, _ = door
    controller.deny("not enrolled")
    assert hw.indicators.pattern == "denied"
    assert hw.history("red")[-1].value == 1
    assert [c.value for c in hw.history("lock")] == [0]


def test_unidentified_face_blinks_red_unlike_denied(door):
    hw, controller, _ = door
    controller.unidentified()
    time.sleep(0.8)
    red = [c.value for c in hw.history("red")]
    assert hw.indicators.pattern == "unknown"
    assert red.count(1) >= 3  # blinking, where 'denied' turns red on once
    assert [c.value for c in hw.history("lock")] == [0]


def test_fault_pattern_stays_on_and_returns_after_a_shown_pattern(door):
    hw, controller, _ = door
    controller.set_fault(True)
    assert hw.indicators.pattern == "fault"
    hw.indicators.show("denied", seconds=0.2)
    assert eventually(lambda: hw.indicators.pattern == "fault", timeout=2)
    assert hw.history("green")[-1].value == 1 and hw.history("red")[-1].value == 1
    controller.set_fault(False)
    assert hw.indicators.pattern == "idle"
    assert hw.history("green")[-1].value == 0 and hw.history("red")[-1].value == 0


def test_lock_reengages_at_once_when_the_door_closes_early(door):
    hw, controller, events = door
    controller.grant("alice")
    hw.contact.simulate_open()
    time.sleep(0.2)
    hw.contact.simulate_close()
    assert hw.lock.is_locked
    (length,) = lock_pulses(hw)
    assert length < 0.6
    assert events.types() == []


def test_opening_without_a_grant_raises_door_forced(door):
    hw, _, events = door
    hw.contact.simulate_open()
    assert events.types() == ["door_forced"]
    assert events.items[0][1]["door"] == "test-door"
    assert hw.lock.is_locked


def test_a_bouncing_contact_raises_door_forced_once(door):
    hw, _, events = door
    for _ in range(3):
        hw.contact.simulate_open()
        hw.contact.simulate_close()
    hw.contact.simulate_open()
    assert events.types() == ["door_forced"]


def test_opening_during_a_grant_is_not_forced(door):
    hw, controller, events = door
    controller.grant("alice")
    time.sleep(0.3)
    hw.contact.simulate_open()
    assert events.types() == []


def test_opening_again_after_the_door_closed_on_a_grant_is_forced(door):
    hw, controller, events = door
    controller.grant("alice")
    hw.contact.simulate_open()
    hw.contact.simulate_close()
    time.sleep(0.7)  # past forced_window_seconds (0.5 s) after the re-lock
    hw.contact.simulate_open()
    assert events.types() == ["door_forced"]


def test_held_open_alarm_fires_and_clears_when_the_door_closes(door):
    hw, controller, events = door
    controller.grant("alice")
    hw.contact.simulate_open()
    assert eventually(lambda: "door_held_open" in events.types(), timeout=7)
    event_type, details = events.items[0]
    assert details["open_seconds"] >= 5 and details["limit_seconds"] == 5
    hw.contact.simulate_close()
    assert events.types() == ["door_held_open", "door_held_open_cleared"]
    assert events.items[1][1]["open_seconds"] >= 5


def test_door_closed_before_held_open_seconds_raises_no_alarm(door):
    hw, controller, events = door
    controller.grant("alice")
    hw.contact.simulate_open()
    time.sleep(0.5)
    hw.contact.simulate_close()
    time.sleep(0.3)
    assert events.types() == []


def test_exit_button_unlocks_one_pulse_and_emits_exit_button(door):
    hw, _, events = door
    hw.exit_button.simulate_press()
    assert not hw.lock.is_locked
    assert events.types() == ["exit_button"]
    assert eventually(lambda: hw.lock.is_locked, timeout=4)
    (length,) = lock_pulses(hw)
    assert length == pytest.approx(1.0, abs=TOLERANCE)


def test_exit_button_presses_within_debounce_count_once(door):
    hw, _, events = door
    for _ in range(5):
        hw.exit_button.simulate_press()
    assert events.types() == ["exit_button"]
    assert [c.value for c in hw.history("lock")] == [0, 1]


def test_exit_button_presses_after_debounce_count_again(door):
    hw, _, events = door
    hw.exit_button.simulate_press()
    time.sleep(0.6)
    hw.exit_button.simulate_press()
    assert events.types() == ["exit_button", "exit_button"]


def test_opening_after_an_exit_press_is_not_forced(door):
    hw, _, events = door
    hw.exit_button.simulate_press()
    hw.contact.simulate_open()
    assert events.types() == ["exit_button"]


def test_held_open_timer_engages_the_lock_when_emit_fails():
    config = section()
    hw = open_hardware(config, door_id="test-door")
    events = Events(fail_on={"door_held_open"})
    controller = DoorController(hw, config, emit=events)
    try:
        hw.lock.unlock(30)  # a pulse that would outlast the alarm
        hw.contact.simulate_open()
        assert eventually(lambda: "door_held_open" in events.types(), timeout=7)
        assert eventually(lambda: hw.lock.is_locked, timeout=1)
        assert controller._thread.is_alive()
    finally:
        controller.close()
        hw.close()


def test_failing_emit_in_a_gpio_callback_engages_the_lock():
    config = section()
    hw = open_hardware(config, door_id="test-door")
    controller = DoorController(hw, config, emit=Events(fail_on={"exit_button"}))
    try:
        hw.exit_button.simulate_press()
        assert hw.lock.is_locked
        assert [c.value for c in hw.history("lock")] == [0, 1, 0]
    finally:
        controller.close()
        hw.close()


def test_close_stops_the_timer_and_engages_the_lock(door):
    hw, controller, events = door
    controller.grant("alice")
    controller.close()
    assert hw.lock.is_locked
    assert not controller._thread.is_alive()
    hw.contact.simulate_open()  # detached: no alarm after close
    assert events.types() == []


@pytest.mark.parametrize("wiring, pull_up, open_value", [
    ("NC", True, 1),   # circuit opens with the door; pull-up reads high
    ("NO", True, 0),   # circuit closes with the door open; switch to ground reads low
    ("NC", False, 0),  # pull-down, contact to 3.3 V: open circuit reads low
    ("NO", False, 1),
])
def test_contact_wiring_decides_which_level_means_open(wiring, pull_up, open_value):
    config = section(wiring=wiring, pull_up=pull_up)
    with open_hardware(config, door_id="test-door") as hw:
        events = Events()
        controller = DoorController(hw, config, emit=events)
        pin = hw.backend.factory.pin(config.contact.pin)
        assert not hw.contact.is_open and pin.state == (not open_value)
        hw.contact.simulate_open()
        assert hw.contact.is_open and pin.state == bool(open_value)
        assert events.types() == ["door_forced"]
        controller.close()
