"""dlib's serialisation format: integers, portable floats, and the face ResNet file."""

import math
import random
import struct

import numpy as np
import pytest

from bytelocker.errors import ModelFormatError
from edge.dlib_format import (
    decode_float,
    decode_int,
    encode_float,
    encode_int,
    face_resnet_layout,
    parse_resnet,
    read_resnet,
)
from edge.models import model_paths


@pytest.fixture(scope="module")
def resnet_bytes():
    with open(model_paths().resnet, "rb") as fh:
        return fh.read()


@pytest.fixture(scope="module")
def resnet(resnet_bytes):
    return parse_resnet(resnet_bytes)


@pytest.mark.parametrize("value, encoded", [
    (0, b"\x01\x00"),
    (5, b"\x01\x05"),
    (150, b"\x01\x96"),
    (4736, b"\x02\x80\x12"),
    (-300, b"\x82\x2c\x01"),
    (-(1 << 63) + 1, b"\x88" + b"\xff" * 7 + b"\x7f"),
])
def test_integers_encode_as_control_byte_then_little_endian_magnitude(value, encoded):
    assert encode_int(value) == encoded
    assert decode_int(encoded) == (value, len(encoded))


@pytest.mark.parametrize("encoded, value", [
    # Bytes as they appear in dlib_face_recognition_resnet_model_v1.dat.
    (b"\x03\x0a\xd7\xa3\x81\x1c", float(np.float32(0.04))),     # loss_metric margin (a float)
    (b"\x03\x9a\x99\x99\x81\x18", float(np.float32(0.6))),      # loss_metric distance threshold
    (b"\x03\x62\x90\xf5\x81\x11", float(np.float32(122.782))),  # input layer's mean red
    (b"\x01\x10\x81\x04", 1.0),                                # a double 1.0: 16 * 2**-4
    (b"\x01\x00\x01\x00", 0.0),
])
def test_portable_floats_decode_to_the_values_dlib_wrote(encoded, value):
    assert decode_float(encoded) == (value, len(encoded))


def test_portable_float_special_exponents_mean_infinities_and_nan():
    assert decode_float(encode_int(0) + encode_int(32000))[0] == math.inf
    assert decode_float(encode_int(0) + encode_int(32001))[0] == -math.inf
    assert math.isnan(decode_float(encode_int(0) + encode_int(32002))[0])


def test_portable_floats_round_trip_doubles_exactly():
    rng = random.Random(7)
    values = [0.0, 1.0, -1.0, 0.5, 1e-300, -2.5e-310, 1.7976931348623157e308, math.pi, math.inf, -math.inf]
    values += [rng.uniform(-1e6, 1e6) for _ in range(500)]
    values += [struct.unpack("<d", struct.pack("<Q", rng.getrandbits(62)))[0] for _ in range(500)]
    for value in values:
        decoded, used = decode_float(encode_float(value))
        assert decoded == value and used == len(encode_float(value))
    assert math.isnan(decode_float(encode_float(math.nan))[0])


def test_portable_floats_round_trip_float32_values_written_with_24_digits():
    for value in np.random.default_rng(3).standard_normal(500).astype(np.float32):
        assert np.float32(decode_float(encode_float(float(value), digits=24))[0]) == value


def test_integer_with_reserved_bits_set_is_rejected():
    with pytest.raises(ModelFormatError, match="control byte 0x31"):
        decode_int(b"\x31\x00")


def test_face_model_parses_into_the_declared_network(resnet):
    kinds = [layer.kind for layer in resnet.layers]
    assert kinds == [layer.kind for layer in face_resnet_layout()]
    assert kinds.count("con") == 29 and kinds.count("affine") == 29 and kinds.count("add_prev") == 14
    # 29 convolutions with biases, 29 gamma/beta pairs and a 256x128 fc matrix.
    assert resnet.parameter_count == 5_614_592
    np.testing.assert_array_equal(resnet.input_mean, np.float32([122.782, 117.001, 104.298]))
    assert resnet.loss_threshold == pytest.approx(0.6)
    assert resnet.params[-1]["weights"].shape == (256, 128)


def test_face_model_weights_are_finite_and_not_all_zero(resnet):
    for params in resnet.params:
        for array in params.values():
            assert np.all(np.isfinite(array))
    assert all(np.abs(p["weights"]).max() > 0 for l, p in zip(resnet.layers, resnet.params) if l.kind == "con")


def test_truncated_model_file_gives_a_clear_error(resnet_bytes, tmp_path):
    path = tmp_path / "dlib_face_recognition_resnet_model_v1.dat"
    path.write_bytes(resnet_bytes[: len(resnet_bytes) // 2])
    with pytest.raises(ModelFormatError, match=r"dlib_face_recognition_resnet_model_v1\.dat is truncated"):
        read_resnet(path)


def test_model_file_with_a_corrupt_layer_name_gives_a_clear_error(resnet_bytes):
    corrupt = resnet_bytes.replace(b"con_4", b"con_9", 1)
    with pytest.raises(ModelFormatError, match=r"found 'con_9' where 'con_4' was expected at byte 33[0-9]"):
        parse_resnet(corrupt)


def test_model_file_with_trailing_bytes_is_rejected(resnet_bytes):
    with pytest.raises(ModelFormatError, match="4 unexpected bytes after the network"):
        parse_resnet(resnet_bytes + b"\x00\x00\x00\x00")


def test_other_dlib_model_is_rejected_as_a_different_network():
    with pytest.raises(ModelFormatError, match="shape_predictor_5_face_landmarks.dat is not valid dlib face ResNet data"):
        read_resnet(model_paths().landmarks5)


def test_missing_model_file_gives_a_clear_error(tmp_path):
    with pytest.raises(ModelFormatError, match="Cannot read the face model"):
        read_resnet(tmp_path / "nothing.dat")
