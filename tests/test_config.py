"""Config loading: the shipped examples, versions and migrations, secrets, the YAML dialect."""

import datetime as dt
import os
import pathlib
import typing

import pytest
from pydantic import BaseModel

from bytelocker.cli import main
from bytelocker.errors import ConfigError
from config import migrations
from config.central import CentralConfig
from config.commands import example_text
from config.door import DoorConfig
from config.loader import detect_kind, inspect_file, load, load_central_config, load_door_config
from config.secrets import MQTT_PASSWORD, read_secret, secret_path

CONFIG_DIR = pathlib.Path(__file__).resolve().parent.parent / "config"
SECRET_VARS = ("BYTELOCKER_MQTT_PASSWORD", "BYTELOCKER_SIGNING_KEY", "BYTELOCKER_DATABASE_PASSWORD",
               "BYTELOCKER_MQTT_TLS_KEY", "CREDENTIALS_DIRECTORY")


@pytest.fixture(autouse=True)
def no_secrets(monkeypatch):
    for name in SECRET_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def signing_key(tmp_path, monkeypatch):
    key = tmp_path / "signing-key"
    key.write_text("not a real key, only has to exist\n")
    monkeypatch.setenv("BYTELOCKER_SIGNING_KEY", str(key))
    return key


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def settings_of(model, prefix=""):
    """Every setting name of a config model, dotted, as staff write them."""
    names = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        names.append(prefix + key)
        args = [field.annotation, *typing.get_args(field.annotation)]
        args += [inner for arg in args for inner in typing.get_args(arg)]
        for arg in args:
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                names.extend(settings_of(arg, prefix + key + "."))
                break
    return names


# -- the shipped examples -----------------------------------------------------------


def test_door_example_passes_check_config(capsys):
    code = main(["check-config", str(CONFIG_DIR / "door.example.yaml")])

    assert code == 0, capsys.readouterr().err


def test_central_example_passes_check_config_when_the_signing_key_exists(signing_key, capsys):
    code = main(["check-config", str(CONFIG_DIR / "central.example.yaml")])

    assert code == 0, capsys.readouterr().err


@pytest.mark.parametrize("kind, model", [("door", DoorConfig), ("central", CentralConfig)])
def test_example_explains_every_setting(kind, model):
    text = (CONFIG_DIR / f"{kind}.example.yaml").read_text()
    missing = [name for name in settings_of(model)
               if f"{name.rsplit('.', 1)[-1]}:" not in text]

    assert not missing, f"{kind}.example.yaml does not mention: {', '.join(missing)}"


@pytest.mark.parametrize("kind", ["door", "central"])
def test_config_example_prints_the_shipped_file(kind, capsys):
    code = main(["config", "example", kind])

    assert code == 0
    assert capsys.readouterr().out == (CONFIG_DIR / f"{kind}.example.yaml").read_text()


def test_examples_are_package_data():
    assert "version: 2" in example_text("door")
    assert "database:" in example_text("central")


def test_example_is_at_the_current_version():
    assert load(CONFIG_DIR / "door.example.yaml", DoorConfig).version == migrations.current_version(DoorConfig)


# -- loading ----------------------------------------------------------------------------


def test_no_path_gives_the_built_in_defaults():
    assert load_door_config(None) == DoorConfig()
    assert load_central_config(None) == CentralConfig()


def test_load_returns_the_values_in_the_file(tmp_path):
    path = write(tmp_path, "door.yaml", "version: 2\ndoor:\n  id: lab-2\nhardware:\n  lock:\n    unlock_seconds: 7\n  backend: simulated\n")

    config = load_door_config(str(path))

    assert config.door.id == "lab-2"
    assert config.hardware.lock.unlock_seconds == 7


def test_load_raises_config_error_listing_every_problem(tmp_path):
    path = write(tmp_path, "door.yaml", "mqtt:\n  port: 0\ncamera:\n  width: x\n")

    with pytest.raises(ConfigError) as caught:
        load_door_config(str(path))

    assert len(caught.value.problems) == 2
    assert isinstance(caught.value, ValueError)
    assert "door.yaml has 2 problems" in str(caught.value)


def test_a_section_with_every_line_commented_out_reads_as_defaults(tmp_path):
    path = write(tmp_path, "door.yaml", "version: 2\ncamera:\n  # source: 1\n")

    assert load_door_config(str(path)).camera == DoorConfig().camera


def test_an_optional_section_left_empty_stays_off(tmp_path):
    path = write(tmp_path, "door.yaml", "version: 2\nhardware:\n  green_led:\n  backend: simulated\n")

    assert load_door_config(str(path)).hardware.green_led is None


def test_no_and_yes_words_stay_text(tmp_path):
    # YAML 1.1 would turn NO into False, which is not a contact wiring.
    path = write(tmp_path, "door.yaml", "version: 2\nhardware:\n  contact:\n    wiring: NO\n  backend: simulated\n")

    assert load_door_config(str(path)).hardware.contact.wiring == "NO"


def test_times_of_day_stay_text(tmp_path):
    # YAML 1.1 would read 07:30 as the base-60 number 450.
    path = write(tmp_path, "door.yaml", "version: 2\npolicy:\n  rules:\n    - from: 07:30\n      to: 18:00\n")

    rule = load_door_config(str(path)).policy.rules[0]

    assert (rule.from_, rule.to) == ("07:30", "18:00")


def test_dates_stay_text_until_a_date_setting_reads_them(tmp_path):
    # YAML 1.1 would make 2026-13-01 a date (and crash on it); a name is text.
    path = write(tmp_path, "door.yaml", "version: 2\ndoor:\n  name: 2026-13-01\n"
                                        "policy:\n  holidays:\n    - date: 2026-12-25\n")

    config = load_door_config(str(path))

    assert config.door.name == "2026-13-01"
    assert config.policy.holidays[0].date == dt.date(2026, 12, 25)


def test_keys_made_of_digits_are_text(tmp_path):
    path = write(tmp_path, "central.yaml", "version: 1\ndoors:\n  1234:\n    area: hall\n")

    assert load_central_config(str(path)).area_of("1234") == "hall"


def test_day_start_is_a_naive_time_of_day(tmp_path):
    path = write(tmp_path, "central.yaml", "version: 1\nweb:\n  day_start: 08:30\n")

    day_start = load_central_config(str(path)).web.day_start

    assert day_start == dt.time(8, 30) and day_start.tzinfo is None


def test_central_public_key_accepts_one_key_or_two_during_a_rotation(tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from bytelocker.signing import public_key_b64

    old, new = (public_key_b64(Ed25519PrivateKey.generate()) for _ in range(2))
    for value in (old, f"{old},{new}", f"{old}, {new}"):
        path = write(tmp_path, "door.yaml", f"version: 2\ndoor:\n  central_public_key: \"{value}\"\n")
        assert load_door_config(str(path)).door.central_public_key == value


def test_database_url_accepts_the_forms_central_can_open(tmp_path):
    for url in ("sqlite:////var/lib/bytelocker/central.db", "postgresql://central@db:5432/bytelocker",
                "postgres://central@db/bytelocker"):
        path = write(tmp_path, "central.yaml", f"version: 1\ndatabase:\n  url: {url}\n")
        assert load_central_config(str(path)).database.url == url


def test_full_day_names_and_abbreviations_are_days(tmp_path):
    path = write(tmp_path, "door.yaml", "version: 2\npolicy:\n  rules:\n"
                                        "    - days: [Monday, tue, wednesday-fri, SUN]\n")

    assert load_door_config(str(path)).policy.rules[0].day_numbers() == [0, 1, 2, 3, 4, 6]


def test_true_and_false_are_booleans(tmp_path):
    path = write(tmp_path, "door.yaml", "version: 2\nmqtt:\n  tls: true\n  enabled: False\n")

    config = load_door_config(str(path))

    assert config.mqtt.tls is True and config.mqtt.enabled is False


def test_same_pin_in_two_roles_is_an_error_even_when_one_is_the_default(tmp_path):
    path = write(tmp_path, "door.yaml", "version: 2\nhardware:\n  lock:\n    pin: 22\n  backend: simulated\n")

    with pytest.raises(ConfigError) as caught:
        load_door_config(str(path))

    assert "hardware.exit_button.pin is 22 (the default), but hardware.lock.pin also uses GPIO 22" in \
        caught.value.problems[0]


def test_cross_checks_find_nothing_in_the_defaults():
    assert DoorConfig().cross_check() == []


# -- versions and migrations -----------------------------------------------------------


def test_version_1_file_loads_with_its_renamed_key(tmp_path):
    path = write(tmp_path, "door.yaml", "version: 1\ndoor:\n  id: old\n  timezone: Europe/Berlin\n")

    config = load_door_config(str(path))

    assert config.site.timezone == "Europe/Berlin"
    assert config.version == 2


def test_file_without_version_is_read_as_version_1(tmp_path):
    path = write(tmp_path, "door.yaml", "door:\n  timezone: Europe/Paris\n")

    assert load_door_config(str(path)).site.timezone == "Europe/Paris"


def test_error_in_a_migrated_key_points_at_the_line_staff_wrote(tmp_path):
    path = write(tmp_path, "door.yaml", "version: 1\ndoor:\n  id: a\n  timezone: Nowhere/Town\n")

    result = inspect_file(str(path), DoorConfig)

    assert result.problems[0].startswith(f"{path} line 4: site.timezone is 'Nowhere/Town'")


def test_check_config_says_an_old_file_was_upgraded(tmp_path, capsys):
    path = write(tmp_path, "door.yaml", "version: 1\ndoor:\n  timezone: UTC\nhardware:\n  backend: simulated\n")

    code = main(["check-config", str(path)])

    assert code == 0
    assert "written for config version 1, read as version 2: door.timezone is now site.timezone" in \
        capsys.readouterr().out


def test_version_newer_than_supported_is_a_clear_error(tmp_path):
    path = write(tmp_path, "door.yaml", "version: 3\n")

    with pytest.raises(ConfigError) as caught:
        load_door_config(str(path))

    assert "version is 3, but this ByteLocker" in caught.value.problems[0]
    assert "reads config versions up to 2" in caught.value.problems[0]


def test_move_key_creates_the_new_section_and_keeps_the_line():
    from config.loader import LineDict

    raw = LineDict({"door": LineDict({"timezone": "UTC"})})
    raw.key_lines["door"] = 2
    raw["door"].key_lines["timezone"] = 3

    assert migrations.move_key(raw, "door.timezone", "site.timezone")
    assert raw["site"]["timezone"] == "UTC" and "timezone" not in raw["door"]
    assert raw["site"].key_lines["timezone"] == 3


def test_every_version_below_the_current_one_has_a_migration():
    for model in (DoorConfig, CentralConfig):
        steps = migrations.MIGRATIONS[model.__name__]
        for version in range(migrations.FIRST_VERSION, migrations.current_version(model)):
            assert version in steps, f"{model.__name__} has no migration from version {version}"


# -- kinds ---------------------------------------------------------------------------------


def test_kind_is_told_from_the_sections(tmp_path):
    assert detect_kind(write(tmp_path, "a.yaml", "door:\n  id: a\n")) == "door"
    assert detect_kind(write(tmp_path, "b.yaml", "mqtt: {}\ndatabase:\n  url: x\n")) == "central"
    assert detect_kind(write(tmp_path, "c.yaml", "mqtt: {}\n")) is None


def test_check_config_uses_the_central_model_for_a_central_file(tmp_path, signing_key, capsys):
    path = write(tmp_path, "site-a.yaml", "database:\n  url: sqlite:////tmp/c.db\n")

    assert main(["check-config", str(path)]) == 0
    assert "(central config)" in capsys.readouterr().out


def test_kind_flag_overrides_the_guess(tmp_path, capsys):
    path = write(tmp_path, "x.yaml", "database:\n  url: sqlite:////tmp/c.db\n")

    assert main(["check-config", "--kind", "door", str(path)]) == 1
    assert "database is not a known section" in capsys.readouterr().err


# -- secrets -------------------------------------------------------------------------------


def test_secret_comes_from_the_environment_first(tmp_path, monkeypatch):
    (tmp_path / "mqtt-password").write_text("from-file")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("BYTELOCKER_MQTT_PASSWORD", "from-env")

    assert read_secret("mqtt-password", "BYTELOCKER_MQTT_PASSWORD") == "from-env"


def test_secret_comes_from_the_systemd_credential_without_its_newline(tmp_path, monkeypatch):
    (tmp_path / "mqtt-password").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))

    assert read_secret("mqtt-password", "BYTELOCKER_MQTT_PASSWORD") == "s3cret"


def test_secret_from_a_credential_folder_has_the_units_prefix(tmp_path, monkeypatch):
    # LoadCredential=bytelocker:/etc/bytelocker/credentials names each file bytelocker_<file>.
    (tmp_path / "bytelocker_mqtt-password").write_text("s3cret")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))

    assert read_secret(*MQTT_PASSWORD[:2]) == "s3cret"


def test_missing_secret_is_none_or_a_config_error():
    assert read_secret("mqtt-password", "BYTELOCKER_MQTT_PASSWORD") is None
    with pytest.raises(ConfigError, match="BYTELOCKER_MQTT_PASSWORD"):
        read_secret("mqtt-password", "BYTELOCKER_MQTT_PASSWORD", required=True)


def test_key_file_secret_is_handed_over_as_a_path(tmp_path, monkeypatch):
    (tmp_path / "mqtt-tls-key").write_text("-----BEGIN PRIVATE KEY-----\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))

    assert secret_path("mqtt-tls-key", "BYTELOCKER_MQTT_TLS_KEY") == os.path.join(tmp_path, "mqtt-tls-key")


def test_mqtt_password_in_the_credentials_folder_satisfies_check_config(tmp_path, monkeypatch, capsys):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "bytelocker_mqtt-password").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    path = write(tmp_path, "door.yaml", "version: 2\nmqtt:\n  username: door-1\nhardware:\n  backend: simulated\n")

    assert main(["check-config", str(path)]) == 0


def test_skip_secrets_checks_only_the_file(tmp_path, capsys):
    path = write(tmp_path, "door.yaml", "version: 2\nmqtt:\n  username: door-1\nhardware:\n  backend: simulated\n")

    assert main(["check-config", "--skip-secrets", str(path)]) == 0


def test_loading_for_the_daemon_does_not_demand_secrets(tmp_path):
    # The daemon reads its secrets itself and says which is missing; load() only checks the file.
    path = write(tmp_path, "door.yaml", "version: 2\nmqtt:\n  username: door-1\n")

    assert load_door_config(str(path)).mqtt.username == "door-1"


def test_credential_file_on_disk_counts_for_check_config_run_as_root(tmp_path, monkeypatch, capsys):
    # An administrator checks the file before starting the unit that will load the credential.
    import config.secrets

    folder = tmp_path / "credentials"
    folder.mkdir()
    (folder / "mqtt-password").write_text("s3cret\n")
    monkeypatch.setattr(config.secrets, "CREDENTIALS_FOLDER", str(folder))
    path = write(tmp_path, "door.yaml", "version: 2\nmqtt:\n  username: door-1\nhardware:\n  backend: simulated\n")

    assert main(["check-config", str(path)]) == 0


def test_camera_url_may_carry_its_password(tmp_path):
    # An IP camera offers no other way to log in; config.camera allows it and never logs it.
    path = write(tmp_path, "door.yaml", "version: 2\ncamera:\n  source: rtsp://admin:pw@cam/stream\n")

    assert load_door_config(str(path)).camera.source == "rtsp://admin:pw@cam/stream"


def test_a_url_password_is_masked_in_messages():
    from config.loader import _show

    assert _show("rtsp://admin:pw123@cam/stream") == "'rtsp://admin:***@cam/stream'"


def test_commands_run_outside_systemd_read_the_credential_files_check_config_accepts(tmp_path, monkeypatch):
    # 'sudo bytelocker people' on a PostgreSQL site: no $CREDENTIALS_DIRECTORY,
    # but the password file the unit loads is there.
    import config.secrets

    folder = tmp_path / "credentials"
    folder.mkdir()
    (folder / "database-password").write_text("s3cret\n")
    monkeypatch.setattr(config.secrets, "CREDENTIALS_FOLDER", str(folder))
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.delenv("BYTELOCKER_DATABASE_PASSWORD", raising=False)
    secret = config.secrets.DATABASE_PASSWORD
    assert config.secrets.read_secret(secret.name, secret.env_var) == "s3cret"
