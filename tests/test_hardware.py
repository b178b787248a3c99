"""Opening the hardware: backends, wiring, bad pins, the simulated log, and ``bytelocker door lock``.

The real backends cannot run on this x86 test machine, which is exactly
what their failure tests need: they must fail with a fix and never fall
back to the simulator.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from bytelocker.errors import ConfigError, HardwareError
from config.hardware import HardwareSection
from config.loader import load_door_config
from hardware import DoorContact, Lock, engage_lock, open_hardware
from hardware.backends import GpiozeroBackend
from hardware.simulated import read_state

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_yaml(path, text):
    path.write_text(textwrap.dedent(text))
    return str(path)


def door_yaml(tmp_path, hardware):
    return write_yaml(tmp_path / "door.yaml", "door:\n  id: test-door\nhardware:\n" + textwrap.indent(
        textwrap.dedent(hardware), "  "))


def read_log(path):
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


# -- backends -------------------------------------------------------------


def test_gpiozero_backend_without_lgpio_fails_with_an_install_hint():
    section = HardwareSection(backend="gpiozero", pin_factory="lgpio")
    with pytest.raises(HardwareError) as err:
        open_hardware(section, door_id="test-door")
    message = str(err.value)
    assert "test-door" in message and "lgpio" in message
    assert "apt install python3-lgpio" in message and "gpio group" in message


def test_gpiozero_backend_defaults_to_lgpio_and_never_falls_back_to_another_factory():
    with pytest.raises(HardwareError, match="pin factory 'lgpio'"):
        open_hardware(HardwareSection(backend="gpiozero"), door_id="test-door")


def test_jetson_backend_without_jetson_gpio_fails_with_an_install_hint():
    section = HardwareSection(backend="jetson", lock={"pin": 11}, contact={"pin": 13}, exit_button={"pin": 15})
    with pytest.raises(HardwareError) as err:
        open_hardware(section, door_id="test-door")
    assert "pip install Jetson.GPIO" in str(err.value) and "gpio group" in str(err.value)


def test_hardware_error_is_also_a_runtime_error():
    with pytest.raises(RuntimeError):
        open_hardware(HardwareSection(backend="gpiozero"), door_id="test-door")


def test_pin_the_board_does_not_have_is_a_hardware_error_naming_pin_and_role():
    section = HardwareSection(backend="simulated", contact=None, exit_button=None, buzzer={"pin": 40})
    with pytest.raises(HardwareError, match=r"GPIO 40 for the buzzer"):
        open_hardware(section, door_id="test-door")


def test_failed_open_leaves_the_lock_engaged_and_the_pins_released():
    section = HardwareSection(backend="simulated", buzzer={"pin": 40})
    with pytest.raises(HardwareError):
        open_hardware(section, door_id="test-door")
    # A second open on a fresh backend works: nothing was left claimed in this process.
    with open_hardware(HardwareSection(backend="simulated"), door_id="test-door") as hw:
        assert hw.lock.is_locked


def test_same_pin_for_two_roles_is_a_hardware_error():
    section = HardwareSection(backend="simulated", green_led={"pin": 17})
    with pytest.raises(HardwareError, match="GPIO 17 is wired to both lock and green"):
        open_hardware(section, door_id="test-door")


# -- door.yaml --------------------------------------------------------------


def test_yaml_pin_300_is_a_config_error_naming_the_key(tmp_path):
    path = door_yaml(tmp_path, """\
        backend: simulated
        lock:
          pin: 300
    """)
    with pytest.raises(ConfigError, match=r"hardware\.lock\.pin"):
        load_door_config(path)


def test_yaml_same_pin_for_two_roles_is_a_config_error(tmp_path):
    path = door_yaml(tmp_path, """\
        backend: simulated
        lock:
          pin: 17
        contact:
          pin: 17
    """)
    with pytest.raises(ConfigError, match="17"):
        load_door_config(path)


def test_yaml_unknown_backend_is_a_config_error(tmp_path):
    path = door_yaml(tmp_path, "backend: arduino\n")
    with pytest.raises(ConfigError, match=r"hardware\.backend"):
        load_door_config(path)


def test_yaml_jetson_pins_must_be_header_pins(tmp_path):
    path = door_yaml(tmp_path, """\
        backend: jetson
        lock:
          pin: 17
        contact:
          pin: 45
    """)
    with pytest.raises(ConfigError, match="BOARD numbering"):
        load_door_config(path)


def test_yaml_no_and_nc_wiring_are_read_as_text(tmp_path):
    path = door_yaml(tmp_path, """\
        backend: simulated
        contact:
          wiring: NO
        exit_button:
          wiring: NC
    """)
    config = load_door_config(path)
    assert config.hardware.contact.wiring == "NO" and config.hardware.exit_button.wiring == "NC"


# -- inputs and indicators ----------------------------------------------------


def test_nc_exit_button_reads_pressed_when_its_circuit_opens():
    section = HardwareSection(backend="simulated", exit_button={"wiring": "NC", "pull_up": True})
    with open_hardware(section, door_id="test-door") as hw:
        pin = hw.backend.factory.pin(22)
        presses = []
        hw.exit_button.when_pressed = lambda: presses.append(pin.state)
        assert pin.state is False and not hw.exit_button.is_pressed
        hw.exit_button.simulate_press()
        assert presses == [True]


def test_active_low_led_is_driven_low_to_light():
    section = HardwareSection(backend="simulated", green_led={"pin": 5, "active_high": False})
    with open_hardware(section, door_id="test-door") as hw:
        hw.indicators.show("granted")
        assert [c.value for c in hw.history("green")] == [1, 0]


def test_indicators_skip_parts_the_door_does_not_have():
    with open_hardware(HardwareSection(backend="simulated"), door_id="test-door") as hw:
        hw.indicators.show("denied")
        hw.indicators.set_fault(True)
        assert hw.indicators.pattern == "denied"
        assert {c.role for c in hw.history()} == {"lock"}


def test_unknown_indicator_pattern_is_an_error_listing_the_patterns():
    with open_hardware(HardwareSection(backend="simulated"), door_id="test-door") as hw:
        with pytest.raises(HardwareError, match="granted"):
            hw.indicators.show("party")


def test_close_switches_the_indicators_off():
    hw = open_hardware(HardwareSection(backend="simulated", red_led={"pin": 6}), door_id="test-door")
    hw.indicators.set_fault(True)
    hw.close()
    assert hw.history("red")[-1].value == 0


class GpiozeroOnMockPins(GpiozeroBackend):
    """The real gpiozero backend, on gpiozero's own mock pin factory instead of lgpio."""

    def _make_factory(self, section):
        from gpiozero.pins.mock import MockFactory

        return MockFactory()


def test_gpiozero_backend_hears_contact_edges_from_its_pin_factory():
    backend = GpiozeroOnMockPins(HardwareSection(backend="gpiozero"), door_id="test-door")
    line = backend.input(27, role="contact", pull_up=True, rest_level=False)
    backend.factory.pin(27).drive_low()  # NC contact, pull-up: door closed reads low
    contact = DoorContact(line, door_id="test-door", wiring="NC", pull_up=True)
    opened = []
    contact.when_opened = lambda: opened.append(True)
    backend.factory.pin(27).drive_high()
    assert contact.is_open and opened == [True]
    backend.close()


def test_gpiozero_backend_keeps_the_lock_line_driven_on_close():
    backend = GpiozeroOnMockPins(HardwareSection(backend="gpiozero"), door_id="test-door")
    lock = Lock(backend.output(17, role="lock", level=True), door_id="test-door", fail_mode="safe")
    led = backend.output(5, role="green", level=True)
    backend.close()
    lock.close()
    assert backend.factory.pin(17).function == "output" and backend.factory.pin(17).state is True
    assert backend.factory.pin(5).function == "input" and led.closed


def test_driving_a_real_backends_input_from_software_is_refused():
    backend = GpiozeroOnMockPins(HardwareSection(backend="gpiozero"), door_id="test-door")
    contact = DoorContact(backend.input(27, role="contact", pull_up=True, rest_level=False), door_id="test-door")
    with pytest.raises(HardwareError, match="only the simulated backend"):
        contact.simulate_open()
    backend.close()


# -- the simulated log and state ------------------------------------------------


def test_simulated_log_gets_one_json_line_per_output_change(tmp_path):
    log = tmp_path / "pins.jsonl"
    section = HardwareSection(backend="simulated", simulated_log=str(log), green_led={"pin": 5})
    with open_hardware(section, door_id="test-door") as hw:
        hw.lock.unlock(5)
        hw.lock.lock()
    entries = read_log(log)
    lock = [e for e in entries if e["role"] == "lock"]
    assert [(e["value"], e["locked"]) for e in lock] == [(0, True), (1, False), (0, True)]
    assert all(e["pin"] == 17 and e["door"] == "test-door" for e in lock)
    assert lock[0]["t"] <= lock[1]["t"] <= lock[2]["t"]
    assert any(e["role"] == "green" for e in entries)


def test_simulated_state_file_holds_the_current_levels(tmp_path):
    log = tmp_path / "pins.jsonl"
    section = HardwareSection(backend="simulated", simulated_log=str(log))
    with open_hardware(section, door_id="test-door") as hw:
        hw.lock.unlock(5)
        assert read_state(str(log) + ".state")[17] == {"role": "lock", "value": 1}
    assert read_state(str(log) + ".state")[17] == {"role": "lock", "value": 0}


def test_engage_lock_drives_a_pin_left_unlocked_to_the_locked_level(tmp_path):
    state = tmp_path / "pins.state"
    section = HardwareSection(backend="simulated", simulated_state=str(state), lock={"fail_mode": "safe"})
    state.write_text(json.dumps({"outputs": {"17": {"role": "lock", "value": 0}}}))
    assert engage_lock(section, door_id="test-door") is True  # fail-safe, active-high: locked = high
    assert read_state(str(state))[17]["value"] == 1


# -- bytelocker door lock ---------------------------------------------------------

HOLDER = """
import sys, threading
from config.loader import load_door_config
from hardware import open_hardware
config = load_door_config(sys.argv[1])
hw = open_hardware(config.hardware, door_id=config.door.id)
hw.lock.unlock(30)
print("unlocked", flush=True)
threading.Event().wait()
"""


def test_door_lock_command_relocks_after_the_daemon_is_killed(tmp_path):
    log = tmp_path / "pins.jsonl"
    path = door_yaml(tmp_path, f"""\
        backend: simulated
        simulated_log: {log}
    """)
    env = dict(os.environ, PYTHONPATH=REPO)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, path], stdout=subprocess.PIPE, text=True,
                              env=env, cwd=str(tmp_path))
    try:
        assert holder.stdout.readline().strip() == "unlocked"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    state = str(log) + ".state"
    assert read_state(state)[17]["value"] == 1  # the killed process left the relay energised

    done = subprocess.run([sys.executable, "-m", "bytelocker", "door", "lock", "-c", path],
                          capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=60)

    assert done.returncode == 0, done.stderr
    assert "lock engaged on GPIO 17" in done.stdout
    assert read_state(state)[17]["value"] == 0
    last = [e for e in read_log(log) if e["role"] == "lock"][-1]
    assert last["value"] == 0 and last["locked"] is True


def test_door_lock_command_fails_clearly_when_the_backend_cannot_load(tmp_path):
    path = door_yaml(tmp_path, """\
        backend: gpiozero
        pin_factory: lgpio
    """)
    done = subprocess.run([sys.executable, "-m", "bytelocker", "door", "lock", "-c", path],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO),
                          cwd=str(tmp_path), timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith("bytelocker: error: Door test-door: the gpiozero pin factory 'lgpio'")
    assert "Traceback" not in done.stderr


def test_door_lock_with_another_doors_config_still_locks_but_says_so_and_fails(tmp_path, capsys):
    from bytelocker.cli import main
    from edge.status import write_status

    state = tmp_path / "state"
    state.mkdir()
    write_status(str(state / "status.json"), {"door_id": "front-door"})
    log = tmp_path / "pins.jsonl"
    path = write_yaml(tmp_path / "door.yaml", f"door:\n  id: back-door\n  data_dir: {state}\n"
                                              f"hardware:\n  backend: simulated\n  simulated_log: {log}\n")
    assert main(["door", "lock", "-c", path]) == 1
    out, err = capsys.readouterr()
    assert "lock engaged on GPIO 17" in out
    assert "this box last ran door 'front-door'" in err and "'back-door'" in err
    assert [e for e in read_log(log) if e["role"] == "lock"][-1]["locked"] is True
    # The box's own door.yaml: exit 0.
    own = write_yaml(tmp_path / "own.yaml", f"door:\n  id: front-door\n  data_dir: {state}\n"
                                            f"hardware:\n  backend: simulated\n  simulated_log: {log}\n")
    assert main(["door", "lock", "-c", own]) == 0
