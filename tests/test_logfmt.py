"""The key=value log format: one line per record, no secrets, no descriptors."""

import io
import logging

import numpy as np
import pytest

from bytelocker.logfmt import LogfmtFormatter, configure, quote


@pytest.fixture
def log():
    stream = io.StringIO()
    logger = logging.getLogger("bytelocker.test.logfmt")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LogfmtFormatter(timestamps=False))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def test_message_written_as_pairs_stays_pairs(log):
    logger, stream = log
    logger.info("door=%s event=%s seq=%s", "front", "granted", 41)

    assert stream.getvalue() == "level=info logger=bytelocker.test.logfmt door=front event=granted seq=41\n"


def test_plain_message_becomes_a_quoted_msg_on_one_line(log):
    logger, stream = log
    logger.warning("camera lost:\n%s", 'no "frames"')

    assert stream.getvalue() == ('level=warning logger=bytelocker.test.logfmt '
                                 'msg="camera lost:\\nno \\"frames\\""\n')


def test_secret_fields_are_redacted(log):
    logger, stream = log
    logger.info("door=%s password=%s", "front", "hunter2")
    logger.info("connect", extra={"fields": {"mqtt_password": "hunter2", "host": "broker"}})

    out = stream.getvalue()
    assert "hunter2" not in out
    assert "password=[redacted]" in out and "host=broker" in out


def test_descriptor_is_left_out(log):
    logger, stream = log
    descriptor = np.random.default_rng(0).random(128)
    logger.info("matched %s", list(descriptor))
    logger.info("matched", extra={"fields": {"descriptor": descriptor}})

    out = stream.getvalue()
    assert str(round(descriptor[0], 4))[:6] not in out
    assert out.count("omitted") == 2


def test_exception_stays_on_one_line(log):
    logger, stream = log
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("door=%s failed", "front")

    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert "exc=RuntimeError" in lines[0] and "boom" in lines[0]


def test_timestamp_only_outside_journald(monkeypatch):
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    assert LogfmtFormatter().timestamps is False
    monkeypatch.delenv("JOURNAL_STREAM")
    assert LogfmtFormatter().timestamps is True


def test_configure_sends_the_root_logger_to_the_stream():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure(logging.INFO, stream=stream, timestamps=False)
        logging.getLogger("x").info("door=%s", "a")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)

    assert stream.getvalue() == "level=info logger=x door=a\n"


def test_quote_leaves_simple_values_bare():
    assert quote("front-door") == "front-door"
    assert quote(None) == "none"
    assert quote(True) == "true"
    assert quote("two words") == '"two words"'
