"""The lock relay on the simulated backend: pulses, polarity, fail modes, failures, exit.

Every assertion reads the simulated backend's recorded pin history
``(t, role, value, pin)``; timings use short pulses and generous tolerances.
"""

import time

import pytest

from bytelocker.errors import HardwareError
from config.hardware import HardwareSection
from hardware import open_hardware
from hardware.lock import locked_level
from tests.waiting import eventually

TOLERANCE = 0.25


def simulated(**lock):
    return HardwareSection(backend="simulated", lock=lock, contact=None, exit_button=None)


def pulses(history, unlocked_value):
    """``[(start, length)]`` of every stretch of the lock line at ``unlocked_value``."""
    found, start = [], None
    for change in history:
        if change.value == unlocked_value and start is None:
            start = change.t
        elif change.value != unlocked_value and start is not None:
            found.append((start, change.t - start))
            start = None
    if start is not None:
        found.append((start, None))
    return found


@pytest.fixture
def hw():
    hardware = open_hardware(simulated(), door_id="test-door")
    yield hardware
    hardware.close()


def test_lock_is_engaged_before_anything_else_is_opened():
    section = HardwareSection(backend="simulated", green_led={"pin": 5}, red_led={"pin": 6})
    with open_hardware(section, door_id="test-door") as hw:
        first = hw.history()[0]
        assert (first.role, first.value, first.pin) == ("lock", 0, 17)
        assert hw.lock.is_locked


def test_unlock_gives_one_pulse_of_the_requested_length(hw):
    hw.lock.unlock(0.5)
    assert eventually(lambda: hw.lock.is_locked)
    found = pulses(hw.history("lock"), unlocked_value=1)
    assert len(found) == 1
    assert found[0][1] == pytest.approx(0.5, abs=TOLERANCE)


def test_unlock_returns_at_once_and_the_lock_relocks_by_itself(hw):
    started = time.monotonic()
    hw.lock.unlock(1.0)
    assert time.monotonic() - started < 0.2
    assert not hw.lock.is_locked
    assert eventually(lambda: hw.lock.is_locked, timeout=3)


def test_unlock_without_seconds_uses_the_configured_pulse_length():
    with open_hardware(simulated(unlock_seconds=1), door_id="test-door") as hw:
        hw.lock.unlock()
        assert eventually(lambda: hw.lock.is_locked, timeout=4)
        (_, length), = pulses(hw.history("lock"), unlocked_value=1)
        assert length == pytest.approx(1.0, abs=TOLERANCE)


def test_unlock_during_a_pulse_extends_it_without_moving_the_relay_twice(hw):
    hw.lock.unlock(0.4)
    time.sleep(0.2)
    hw.lock.unlock(0.4)
    assert eventually(lambda: hw.lock.is_locked)
    (_, length), = pulses(hw.history("lock"), unlocked_value=1)
    assert length == pytest.approx(0.6, abs=TOLERANCE)


def test_lock_ends_a_pulse_at_once(hw):
    hw.lock.unlock(10)
    hw.lock.lock()
    assert hw.lock.is_locked
    (_, length), = pulses(hw.history("lock"), unlocked_value=1)
    assert length < 0.1


@pytest.mark.parametrize("fail_mode, active_high, locked_value", [
    ("secure", True, 0),   # strike, relay energises high: locked = relay off = low
    ("secure", False, 1),  # strike, active-low relay board: relay off = high
    ("safe", True, 1),     # maglock: locked = relay on = high
    ("safe", False, 0),    # maglock, active-low board: relay on = low
])
def test_locked_pin_level_follows_fail_mode_and_polarity(fail_mode, active_high, locked_value):
    assert locked_level(fail_mode=fail_mode, active_high=active_high) == bool(locked_value)
    with open_hardware(simulated(fail_mode=fail_mode, active_high=active_high), door_id="test-door") as hw:
        hw.lock.unlock(0.2)
        assert eventually(lambda: hw.lock.is_locked)
        values = [c.value for c in hw.history("lock")]
        assert values == [locked_value, 1 - locked_value, locked_value]


def test_active_low_relay_gets_inverted_pin_levels():
    with open_hardware(simulated(active_high=False), door_id="test-door") as hw:
        hw.lock.unlock(0.2)
        assert eventually(lambda: hw.lock.is_locked)
        found = pulses(hw.history("lock"), unlocked_value=0)
        assert len(found) == 1 and found[0][1] == pytest.approx(0.2, abs=TOLERANCE)


def test_lock_is_engaged_after_the_pulse_thread_fails_to_write(hw):
    hw.lock.unlock(0.2)
    hw.lock._line.inject_fault(OSError("GPIO write failed"))
    assert eventually(lambda: hw.lock.is_locked, timeout=3)
    # The thread survived: the next pulse still ends by itself.
    hw.lock.unlock(0.2)
    assert eventually(lambda: hw.lock.is_locked, timeout=3)
    assert len(pulses(hw.history("lock"), unlocked_value=1)) == 2


def test_close_during_a_pulse_engages_the_lock_and_keeps_the_line_driven():
    hw = open_hardware(simulated(), door_id="test-door")
    hw.lock.unlock(10)
    hw.close()
    assert hw.lock.is_locked
    assert hw.history("lock")[-1].value == 0
    mock_pin = hw.backend.factory.pin(17)
    assert mock_pin.function == "output" and mock_pin.state is False


def test_close_is_safe_to_call_twice(hw):
    hw.close()
    hw.close()
    assert hw.lock.is_locked


def test_unlock_refuses_a_pulse_longer_than_30_seconds(hw):
    with pytest.raises(HardwareError, match="at most 30 seconds"):
        hw.lock.unlock(3600)
    assert hw.lock.is_locked


def test_unlock_after_close_is_an_error_naming_the_door():
    hw = open_hardware(simulated(), door_id="test-door")
    hw.close()
    with pytest.raises(HardwareError, match="test-door"):
        hw.lock.unlock(1)
    assert hw.lock.is_locked
