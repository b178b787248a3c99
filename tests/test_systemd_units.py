"""The systemd units: they verify cleanly, meet their hardening scores and call real commands."""

import configparser
import pathlib
import re
import shlex
import shutil
import subprocess

import pytest

from bytelocker.cli import build_parser

SYSTEMD_DIR = pathlib.Path(__file__).resolve().parent.parent / "systemd"
DOOR = SYSTEMD_DIR / "bytelocker-door.service"
CENTRAL = SYSTEMD_DIR / "bytelocker-central.service"
WEB = SYSTEMD_DIR / "bytelocker-web.service"
INSTALLED_BINARY = "/opt/bytelocker/venv/bin/bytelocker"

# Exposure goals of `systemd-analyze security` (0 is best, 10 worst).
DOOR_GOAL = 2.5
CENTRAL_GOAL = 2.0

ANALYZE = shutil.which("systemd-analyze") or (
    "/usr/bin/systemd-analyze" if pathlib.Path("/usr/bin/systemd-analyze").exists() else None)
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (scripts/system-packages.sh installs systemd)")


def directives(path):
    """Every ``Key=value`` of a unit file as a list of (section, key, value), in order."""
    found, section = [], None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.append((section, key, value))
    return found


def values(path, key):
    return [value for _, k, value in directives(path) if k == key]


def runnable_copy(unit, tmp_path):
    """The unit with its installed binary swapped for a stub that exists here, for `verify`."""
    stub = tmp_path / "bin" / "bytelocker"
    stub.parent.mkdir(exist_ok=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace(INSTALLED_BINARY, str(stub)))
    return copy


def exposure(unit):
    result = subprocess.run([ANALYZE, "security", "--offline=yes", "--no-pager", str(unit)],
                            capture_output=True, text=True, timeout=120)
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


@needs_analyze
@pytest.mark.parametrize("unit", [DOOR, CENTRAL, WEB], ids=["door", "central", "web"])
def test_unit_passes_systemd_analyze_verify(unit, tmp_path):
    copy = runnable_copy(unit, tmp_path)

    result = subprocess.run([ANALYZE, "verify", "--man=no", str(copy)],
                            capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "" and result.stdout.strip() == "", result.stdout + result.stderr


@needs_analyze
def test_verify_notices_a_missing_binary(tmp_path):
    # Guards the test above: verify must really be checking the ExecStart= paths.
    copy = tmp_path / DOOR.name
    copy.write_text(DOOR.read_text().replace(INSTALLED_BINARY, str(tmp_path / "missing")))

    result = subprocess.run([ANALYZE, "verify", "--man=no", str(copy)],
                            capture_output=True, text=True, timeout=120)

    assert "is not executable" in result.stderr


@needs_analyze
def test_door_unit_exposure_meets_its_goal():
    assert exposure(DOOR) <= DOOR_GOAL


@needs_analyze
def test_central_unit_exposure_meets_its_goal():
    assert exposure(CENTRAL) <= CENTRAL_GOAL


@needs_analyze
def test_dashboard_unit_exposure_meets_centrals_goal():
    assert exposure(WEB) <= CENTRAL_GOAL


@pytest.mark.parametrize("unit", [DOOR, CENTRAL, WEB], ids=["door", "central", "web"])
def test_unit_runs_commands_the_cli_knows(unit):
    parser = build_parser()
    commands = [v for _, k, v in directives(unit) if k in ("ExecStartPre", "ExecStart", "ExecStopPost")]

    for command in commands:
        argv = shlex.split(command.lstrip("-+!@:"))
        assert argv[0] == INSTALLED_BINARY
        args = parser.parse_args(argv[1:])
        assert callable(args.func), command


@pytest.mark.parametrize("unit, kind, config", [(DOOR, "door", "/etc/bytelocker/door.yaml"),
                                                (CENTRAL, "central", "/etc/bytelocker/central.yaml"),
                                                (WEB, "central", "/etc/bytelocker/central.yaml")],
                         ids=["door", "central", "web"])
def test_unit_refuses_to_start_on_a_bad_config(unit, kind, config):
    assert values(unit, "ExecStartPre") == [
        f"{INSTALLED_BINARY} check-config --kind {kind} {config}"]


def test_door_unit_engages_the_lock_after_every_exit():
    assert values(DOOR, "ExecStopPost") == [f"{INSTALLED_BINARY} door lock -c /etc/bytelocker/door.yaml"]


@pytest.mark.parametrize("unit", [DOOR, CENTRAL], ids=["door", "central"])
def test_unit_is_notify_with_a_watchdog_and_restarts_with_a_limit(unit):
    assert values(unit, "Type") == ["notify"]
    assert values(unit, "Restart") == ["always"]
    assert int(values(unit, "WatchdogSec")[0]) > 0
    assert values(unit, "StartLimitIntervalSec") and values(unit, "StartLimitBurst")


@pytest.mark.parametrize("unit", [DOOR, CENTRAL, WEB], ids=["door", "central", "web"])
def test_unit_runs_as_the_bytelocker_user_with_its_folders(unit):
    assert values(unit, "User") == ["bytelocker"]
    assert values(unit, "StateDirectory") == ["bytelocker"]
    assert values(unit, "ConfigurationDirectory") == ["bytelocker"]


def test_door_unit_works_in_its_writable_state_folder():
    # lgpio creates a pipe in the working directory, for door run and for door lock alike.
    assert values(DOOR, "StateDirectory") == ["bytelocker"]
    assert values(DOOR, "WorkingDirectory") == ["/var/lib/bytelocker"]


def test_door_unit_reaches_only_the_camera_and_gpio_devices():
    assert values(DOOR, "DevicePolicy") == ["closed"]
    allowed = {value.split()[0] for value in values(DOOR, "DeviceAllow")}
    assert allowed <= {"char-video4linux", "char-media", "char-dma_heap", "char-gpiochip",
                       "char-bcm2835-gpiomem"}
    assert values(DOOR, "SupplementaryGroups") == ["gpio video"]


def test_central_unit_has_no_devices_and_no_extra_groups():
    assert values(CENTRAL, "PrivateDevices") == ["yes"]
    assert values(CENTRAL, "SupplementaryGroups") == []


def test_units_state_directory_holds_the_example_configs_data():
    from config.loader import load_central_config, load_door_config

    root = pathlib.Path(__file__).resolve().parent.parent / "config"
    door = load_door_config(str(root / "door.example.yaml"))
    central = load_central_config(str(root / "central.example.yaml"))

    assert door.door.data_dir == "/var/lib/" + values(DOOR, "StateDirectory")[0]
    assert central.database.url.startswith("sqlite:////var/lib/bytelocker/")
    assert central.storage.snapshot_dir.startswith("/var/lib/bytelocker/")


def test_unit_files_parse_as_ini():
    for unit in (DOOR, CENTRAL):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.read_string(unit.read_text())
        assert {"Unit", "Service", "Install"} <= set(parser.sections())
