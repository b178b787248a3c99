"""The broken-config corpus: every file here must make ``bytelocker check-config``
exit 1 with a message that names the line and the key, in plain words.

Each case is (id, kind, text, fragments): the fragments must all appear in
what check-config prints.  Cases run the real CLI entry point.
"""

import pytest

from bytelocker.cli import main

SECRET_VARS = ("BYTELOCKER_MQTT_PASSWORD", "BYTELOCKER_SIGNING_KEY", "BYTELOCKER_DATABASE_PASSWORD",
               "BYTELOCKER_MQTT_TLS_KEY", "CREDENTIALS_DIRECTORY")

CASES = [
    ("text_where_a_number_belongs", "door",
     "version: 2\ncamera:\n  width: wide\n",
     ["door.yaml line 3:", "camera.width is 'wide', but must be a whole number"]),
    ("fraction_where_a_whole_number_belongs", "door",
     "version: 2\ndetection:\n  upsample: 1.5\n",
     ["line 3:", "detection.upsample is 1.5, but must be a whole number"]),
    ("unlock_time_above_its_range", "door",
     "version: 2\nhardware:\n  lock:\n    unlock_seconds: 120\n  backend: simulated\n",
     ["line 4:", "hardware.lock.unlock_seconds is 120, but must be between 1 and 30 seconds"]),
    ("port_below_its_range", "door",
     "version: 2\nmqtt:\n  port: 0\n",
     ["line 3:", "mqtt.port is 0, but must be between 1 and 65535"]),
    ("threshold_not_above_zero", "door",
     "version: 2\nrecognition:\n  threshold: 0\n",
     ["line 3:", "recognition.threshold is 0, but must be more than 0 and at most 1.2"]),
    ("choice_not_in_the_list", "door",
     "version: 2\nhardware:\n  backend: gpio\n",
     ["line 3:", "hardware.backend is 'gpio', but must be one of: gpiozero, jetson, simulated"]),
    ("misspelled_setting_gets_a_suggestion", "door",
     "version: 2\ncamera:\n  source: 0\n  widht: 640\n",
     ["line 4:", "camera.widht is not a known setting (did you mean 'width'?)"]),
    ("misspelled_section_gets_a_suggestion", "door",
     "version: 2\nhardwre:\n  backend: simulated\n",
     ["line 2:", "hardwre is not a known section (did you mean 'hardware'?)"]),
    ("duplicate_setting", "door",
     "version: 2\ndoor:\n  id: a\n  name: A\n  id: b\n",
     ["line 5:", "key 'door.id' appears twice (first at line 3)"]),
    ("duplicate_section", "door",
     "version: 2\ncamera:\n  source: 0\ndoor:\n  id: a\ncamera:\n  source: 1\n",
     ["line 6:", "key 'camera' appears twice (first at line 2)"]),
    ("yes_no_word_where_true_false_belongs", "door",
     "version: 2\nmqtt:\n  tls: maybe\n",
     ["line 3:", "mqtt.tls is 'maybe', but must be true or false"]),
    ("password_written_in_the_yaml", "door",
     "version: 2\nmqtt:\n  username: door-1\n  password: hunter2\n",
     ["line 4:", "mqtt.password holds the MQTT broker password and must not be written in a config file",
      "BYTELOCKER_MQTT_PASSWORD"]),
    ("token_written_in_an_unexpected_place", "door",
     "version: 2\nhardware:\n  api_token: abc123\n",
     ["line 3:", "hardware.api_token holds a secret", "systemd credential"]),
    ("database_address_with_a_password", "central",
     "version: 1\ndatabase:\n  url: postgresql://central:s3cret@db.example.org/bytelocker\n",
     ["central.yaml line 3:", "database.url has a password in it", "BYTELOCKER_DATABASE_PASSWORD"]),
    ("mqtt_user_without_a_password", "door",
     "version: 2\nmqtt:\n  host: broker\n  username: door-1\n",
     ["line 4:", "mqtt.username is 'door-1', so the MQTT broker password is needed",
      "/etc/bytelocker/credentials/mqtt-password"]),
    ("central_without_its_signing_key", "central",
     "version: 1\ndatabase:\n  url: sqlite:////tmp/central.db\n",
     ["central.yaml:", "central's Ed25519 signing key is needed", "BYTELOCKER_SIGNING_KEY"]),
    ("one_gpio_pin_for_two_roles", "door",
     "version: 2\nhardware:\n  lock:\n    pin: 17\n  exit_button:\n    pin: 17\n  backend: simulated\n",
     ["line 6:", "hardware.exit_button.pin is 17, but hardware.lock.pin also uses GPIO 17"]),
    ("pin_number_out_of_range", "door",
     "version: 2\nhardware:\n  contact:\n    pin: 300\n  backend: simulated\n",
     ["line 4:", "hardware.contact.pin is 300, but must be between 0 and "]),
    ("unknown_time_zone", "door",
     "version: 2\nsite:\n  timezone: Mars/Olympus_Mons\n",
     ["line 3:", "site.timezone is 'Mars/Olympus_Mons', but must be an IANA time zone name"]),
    ("schedule_time_past_midnight", "door",
     "version: 2\npolicy:\n  rules:\n    - days: [mon-fri]\n      from: \"07:00\"\n      to: \"25:00\"\n",
     ["line 6:", "policy.rules[0].to is '25:00', but must be a time of day"]),
    ("schedule_with_a_made_up_day", "door",
     "version: 2\npolicy:\n  rules:\n    - days: [funday]\n",
     ["line 4:", "policy.rules[0].days", "funday"]),
    ("holiday_date_not_a_date", "door",
     "version: 2\npolicy:\n  holidays:\n    - date: christmas\n",
     ["line 4:", "policy.holidays[0].date is 'christmas', but must be a date written YYYY-MM-DD"]),
    ("jetson_pin_that_is_not_a_header_pin", "door",
     "version: 2\nhardware:\n  backend: jetson\n  lock:\n    pin: 7\n  contact:\n    pin: 45\n",
     ["line 2:", "hardware has a problem:", "45"]),
    ("holiday_listed_twice", "door",
     "version: 2\npolicy:\n  holidays:\n    - date: 2026-12-25\n    - date: 2026-12-25\n",
     ["line 2:", "policy has a problem:", "2026-12-25"]),
    ("indicator_without_its_pin", "door",
     "version: 2\nhardware:\n  green_led:\n    active_high: true\n  backend: simulated\n",
     ["line 3:", "hardware.green_led.pin is required"]),
    ("section_given_a_plain_value", "door",
     "version: 2\ncamera: 5\n",
     ["line 2:", "camera is 5, but must be a section of settings"]),
    ("door_id_with_a_space", "door",
     "version: 2\ndoor:\n  id: front door\n",
     ["line 3:", "door.id is 'front door', but has characters that are not allowed"]),
    ("empty_door_id", "door",
     "version: 2\ndoor:\n  id: \"\"\n",
     ["line 3:", "door.id is '', but must not be empty"]),
    ("number_where_text_belongs", "door",
     "version: 2\ndoor:\n  id: [1, 2]\n",
     ["line 3:", "door.id is a list, but must be text"]),
    ("version_newer_than_this_program", "door",
     "version: 99\ndoor:\n  id: a\n",
     ["line 1:", "version is 99, but this ByteLocker", "reads config versions up to 2"]),
    ("version_not_a_number", "door",
     "version: two\n",
     ["line 1:", "version is 'two', but must be a whole number"]),
    ("old_and_new_name_both_set", "door",
     "version: 1\ndoor:\n  timezone: UTC\nsite:\n  timezone: UTC\n",
     ["line 3:", "door.timezone is 'UTC', but is now called site.timezone, and site.timezone is also set"]),
    ("door_data_dir_relative", "door",
     "version: 2\ndoor:\n  data_dir: relative/dir\n",
     ["line 3:", "door.data_dir is 'relative/dir', but must be an absolute path"]),
    ("binary_value", "door",
     "version: 2\ndoor:\n  name: !!binary \"@@@\"\n",
     ["line 3", "binary values (!!binary) are not supported"]),
    ("door_without_a_hardware_section", "door",
     "version: 2\ndoor:\n  id: a\n",
     ["hardware.backend is not set, but a door must name its GPIO backend: gpiozero (Raspberry Pi), jetson"]),
    ("door_describing_unlike_central_enrolment", "door",
     "version: 2\nrecognition:\n  augment: mirror\n",
     ["line 3:", "recognition.augment is 'mirror', but is not accepted: central enrols everyone with 'none'",
      "--augment mirror"]),
    ("retention_below_one_day", "central",
     "version: 1\nstorage:\n  snapshot_retention_days: 0\n",
     ["central.yaml line 3:", "storage.snapshot_retention_days is 0, but must be between 1 and 3650 days"]),
    ("file_is_a_list", "door",
     "- door\n- camera\n",
     ["line 1:", "the file must be made of sections", "but it is a list"]),
    ("file_is_one_word", "door",
     "door\n",
     ["line 1:", "the file must be made of sections", "but it is 'door'"]),
    ("tabs_for_indenting", "door",
     "version: 2\ndoor:\n\tid: a\n",
     ["line 3:", "not valid YAML", "a tab is used for indenting; indent with spaces only"]),
    ("colon_in_an_unquoted_value", "door",
     "version: 2\ndoor:\n  name: Lobby: east\n",
     ["line 3:", "not valid YAML", "put a value that contains ': ' in quotes"]),
    ("unclosed_quote", "door",
     "version: 2\ndoor:\n  name: \"Lobby\n",
     ["not valid YAML"]),
    ("empty_file", "door",
     "",
     ["door.yaml: the file is empty", "bytelocker config example door"]),
    ("only_comments", "central",
     "# central.yaml\n# nothing here yet\n",
     ["central.yaml: the file is empty", "bytelocker config example central"]),
    ("holiday_date_not_on_the_calendar", "door",
     "version: 2\npolicy:\n  holidays:\n    - date: 2026-02-30\n",
     ["line 4:", "policy.holidays[0].date is '2026-02-30', but is not a date on the calendar"]),
    ("value_tagged_int_that_is_not_a_number", "door",
     "version: 2\ncamera:\n  width: !!int abc\n",
     ["door.yaml line 3:", "camera.width is 'abc', but it is marked !!int", "not a whole number"]),
    ("value_tagged_float_that_is_not_a_number", "door",
     "version: 2\nrecognition:\n  threshold: !!float abc\n",
     ["line 3:", "recognition.threshold is 'abc', but it is marked !!float", "not a number"]),
    ("value_tagged_timestamp_that_is_not_a_time", "door",
     "version: 2\ndoor:\n  name: !!timestamp \"2026-01-01 99:00\"\n",
     ["line 3:", "door.name is '2026-01-01 99:00', but it is marked !!timestamp"]),
    ("number_yaml_cannot_read", "door",
     "version: 2\nhardware:\n  lock:\n    pin: 0x_\n",
     ["line 4:", "hardware.lock.pin is '0x_', but it cannot be read as a whole number"]),
    ("anchor_and_alias", "door",
     "version: 2\ndoor:\n  id: front\n  name: &n Front\nmqtt:\n  username: *n\n",
     ["line 4:", "anchors and aliases (&name, *name) are not supported in ByteLocker config files"]),
    ("merge_of_an_alias", "door",
     "version: 2\ncamera: &c\n  width: 640\nhardware:\n  <<: *c\n",
     ["line 2:", "anchors and aliases (&name, *name) are not supported"]),
    ("key_that_is_a_number", "door",
     "version: 2\ndoor:\n  id: x\n  1: 2\n",
     ["door.yaml line 4:", "door.1 is not a known setting"]),
    ("key_that_is_null", "door",
     "version: 2\ndoor:\n  id: x\n  null: 2\n",
     ["door.yaml line 4:", "door.null is not a known setting"]),
    ("day_start_as_a_number", "central",
     "version: 1\nweb:\n  day_start: 9\n",
     ["central.yaml line 3:", "web.day_start is 9, but must be a time of day as HH:MM, like 09:00"]),
    ("day_start_without_a_colon", "central",
     "version: 1\nweb:\n  day_start: 0900\n",
     ["line 3:", "web.day_start is '0900', but must be a time of day as HH:MM"]),
    ("day_start_with_a_time_zone", "central",
     "version: 1\nweb:\n  day_start: \"09:00+02:00\"\n",
     ["line 3:", "web.day_start is '09:00+02:00', but must be a time of day as HH:MM"]),
    ("central_public_key_placeholder", "door",
     "version: 2\ndoor:\n  central_public_key: \"MCowBQYDK2VwAyEA...\"\n",
     ["line 3:", "door.central_public_key is 'MCowBQYDK2VwAyEA...', but is not a base64 Ed25519 public key",
      "bytelocker keys init"]),
    ("database_url_that_is_a_bare_path", "central",
     "version: 1\ndatabase:\n  url: /var/lib/bytelocker/central.db\n",
     ["line 3:", "database.url is '/var/lib/bytelocker/central.db', but must be sqlite:////",
      "postgresql://"]),
    ("database_url_of_an_unsupported_kind", "central",
     "version: 1\ndatabase:\n  url: mysql://central@db/bytelocker\n",
     ["line 3:", "database.url is 'mysql://central@db/bytelocker', but must be sqlite:////"]),
    ("database_url_with_a_relative_sqlite_path", "central",
     "version: 1\ndatabase:\n  url: sqlite:///var/lib/bytelocker/central.db\n",
     ["line 3:", "database.url is 'sqlite:///var/lib/bytelocker/central.db', but", "four slashes"]),
    ("snapshot_dir_empty", "central",
     "version: 1\nstorage:\n  snapshot_dir: \"\"\n",
     ["line 3:", "storage.snapshot_dir is '', but must be an absolute path"]),
    ("snapshot_dir_relative", "central",
     "version: 1\nstorage:\n  snapshot_dir: snapshots\n",
     ["line 3:", "storage.snapshot_dir is 'snapshots', but must be an absolute path"]),
    ("schedule_starting_at_24_00", "door",
     "version: 2\npolicy:\n  rules:\n    - from: \"24:00\"\n      to: \"06:00\"\n",
     ["line 4:", "policy.rules[0].from is '24:00', but", "24:00 is allowed only in 'to'"]),
    ("schedule_with_a_misspelled_day", "door",
     "version: 2\npolicy:\n  rules:\n    - days:\n        - monday\n        - frii\n",
     ["line 6:", "policy.rules[0].days[1] is 'frii', but is not a day name"]),
    ("schedule_with_a_word_that_starts_like_a_day", "door",
     "version: 2\npolicy:\n  rules:\n    - days: [monkey-fri]\n",
     ["line 4:", "policy.rules[0].days[0] is 'monkey-fri', but"]),
    ("schedule_ending_when_it_starts", "door",
     "version: 2\npolicy:\n  rules:\n    - from: \"08:00\"\n      to: \"08:00\"\n",
     ["line 5:", "policy.rules[0].to is '08:00', but is the same as 'from'",
      "from: \"00:00\" and to: \"24:00\""]),
]


@pytest.fixture(autouse=True)
def no_secrets(monkeypatch):
    for name in SECRET_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("case_id, kind, text, fragments", CASES, ids=[c[0] for c in CASES])
def test_broken_config_fails_check_config_with_line_and_key(tmp_path, capsys, monkeypatch,
                                                            case_id, kind, text, fragments):
    monkeypatch.chdir(tmp_path)
    (tmp_path / f"{kind}.yaml").write_text(text, encoding="utf-8")

    code = main(["check-config", "--kind", kind, f"{kind}.yaml"])

    out = capsys.readouterr()
    printed = out.out + out.err
    assert code == 1, printed
    for fragment in fragments:
        assert fragment in printed, f"{fragment!r} not in:\n{printed}"


def test_corpus_has_at_least_twenty_broken_files():
    assert len(CASES) >= 20


def test_secret_value_is_never_printed(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "door.yaml").write_text(
        "version: 2\nmqtt:\n  password: hunter2\n  port: 0\n", encoding="utf-8")

    code = main(["check-config", "door.yaml"])

    out = capsys.readouterr()
    assert code == 1
    assert "hunter2" not in out.out + out.err
    assert "mqtt.port is 0" in out.err


def test_database_password_is_never_printed(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "central.yaml").write_text(
        "database:\n  url: postgresql://central:s3cret@db/bytelocker\n", encoding="utf-8")

    main(["check-config", "central.yaml"])

    out = capsys.readouterr()
    assert "s3cret" not in out.out + out.err


def test_every_problem_of_a_file_is_reported_in_line_order(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "door.yaml").write_text(
        "version: 2\n"
        "mqtt:\n  port: 0\n"
        "camera:\n  widht: 1\n"
        "hardware:\n  lock:\n    unlock_seconds: 99\n  backend: simulated\n",
        encoding="utf-8")

    main(["check-config", "door.yaml"])

    err = capsys.readouterr().err
    lines = [line.strip() for line in err.splitlines() if " line " in line]
    assert [line.split(":")[0] for line in lines] == [
        "door.yaml line 3", "door.yaml line 5", "door.yaml line 8"]
    assert "3 problems" in err


def test_every_file_is_checked_even_after_a_bad_one(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text("door:\n  id: 'a b'\n", encoding="utf-8")
    (tmp_path / "good.yaml").write_text("door:\n  id: ab\nhardware:\n  backend: simulated\n", encoding="utf-8")

    code = main(["check-config", "bad.yaml", "good.yaml"])

    out = capsys.readouterr()
    assert code == 1
    assert "bad.yaml line 2" in out.err
    assert "good.yaml: ok" in out.out


def test_missing_file_is_reported_by_name(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)

    code = main(["check-config", "--kind", "door", "nowhere.yaml"])

    assert code == 1
    assert "nowhere.yaml: there is no such file" in capsys.readouterr().err


def test_file_that_is_not_utf8_is_reported(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "door.yaml").write_bytes(b"door:\n  name: Caf\xe9\n")

    code = main(["check-config", "door.yaml"])

    assert code == 1
    assert "not UTF-8" in capsys.readouterr().err


def test_file_that_is_not_utf8_names_the_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "door.yaml").write_bytes(b"version: 2\ndoor:\n  id: x\n  name: Caf\xe9\n")

    code = main(["check-config", "door.yaml"])

    assert code == 1
    assert "door.yaml line 4: the file is not UTF-8 text" in capsys.readouterr().err


def test_alias_bomb_is_refused_at_once(tmp_path, capsys, monkeypatch):
    # Nine levels of nine aliases each would expand to 9**8 items (gigabytes).
    monkeypatch.chdir(tmp_path)
    lines = ["door:", "  id: x", 'a: &a ["x","x","x","x","x","x","x","x","x"]']
    for previous, name in zip("abcdefg", "bcdefgh"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]")
    (tmp_path / "door.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")

    code = main(["check-config", "door.yaml"])

    assert code == 1
    assert "door.yaml line 3: anchors and aliases" in capsys.readouterr().err
