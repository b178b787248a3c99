"""dlib's serialisation format, and dlib's face ResNet read from it.

``read_resnet(path) -> ResNet`` parses ``dlib_face_recognition_resnet_model_v1.dat``
(the network of dlib's ``dnn_face_recognition_ex.cpp``, as wrapped by the Python
binding ``dlib.face_recognition_model_v1``) into numpy arrays, without dlib.

What the format is, as dlib writes it (``dlib/serialize.h``, ``dlib/dnn/core.h``,
``layers.h``, ``tensor.h``, ``input.h``, ``loss.h``):

* **integers**: one control byte, then the magnitude in that many bytes, little
  endian.  The control byte's low nibble is the byte count (1..8), bit 7 is the
  sign; bits 4..6 are always zero.  ``5`` is ``01 05``, ``-300`` is ``82 2c 01``.
* **floats and doubles** ("portable floats", ``float_details``): the integer
  ``mantissa`` then the integer ``exponent``; the value is ``mantissa * 2**exponent``.
  Exponents 32000, 32001 and 32002 mean +inf, -inf and NaN.  ``1.0`` written
  from a double is ``01 10 81 04`` (16 * 2**-4).
* **strings**: the length as an unsigned integer, then the bytes.  **bools**: one
  ASCII byte, ``'0'`` or ``'1'``.
* **tensors**: version 2, the four dimensions (samples, k, rows, columns) as
  integers, then the values as raw little-endian IEEE float32.  Alias tensors
  (views into a layer's parameters) are version 1 and their four dimensions.
* **a network**: ``add_loss_layer`` writes its version, the loss, then its
  subnetwork.  Every ``add_layer`` writes its version, *then its subnetwork*,
  then its own layer, so the file holds all the wrappers' versions outermost
  first, then the input layer, then the layers innermost (input side) first.
  Tag and skip layers write only their version (1), which is why the layer order
  cannot be read from the file alone: it comes from the network's declaration,
  which :func:`face_resnet_layout` restates and the parser checks at every layer.

The face network (input_rgb_image_sized<150>, 29 convolutions, 5.6 M parameters)::

    loss_metric<fc_no_bias<128, avg_pool_everything<
      alevel0<alevel1<alevel2<alevel3<alevel4<
      max_pool<3,3,2,2, relu<affine<con<32,7,7,2,2, input_rgb_image_sized<150>>>>>>>>>>>>>

where each level is a stack of residual blocks ``relu(x + affine(con(relu(affine(con(x))))))``;
the first block of levels 3..0 halves the size with a stride-2 convolution and an
average-pooled shortcut (``add_prev`` zero-pads the smaller operand).
"""

import math
import os
from dataclasses import dataclass, field

import numpy as np

from bytelocker.errors import ModelFormatError

# float_details' special exponents (dlib/float_details.h).
EXP_INF = 32000
EXP_NINF = 32001
EXP_NAN = 32002


# --------------------------------------------------------------------------- scalars


def encode_int(value):
    """Return ``value`` (a Python int) in dlib's variable-length integer encoding."""
    value = int(value)
    magnitude = -value if value < 0 else value
    body = magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8), "little")
    if len(body) > 8:
        raise ValueError(f"{value} does not fit dlib's 64-bit integer encoding")
    return bytes([len(body) | (0x80 if value < 0 else 0)]) + body


def encode_float(value, *, digits=53):
    """Return ``value`` in dlib's portable float encoding (``float_details``).

    ``digits`` is the mantissa width of the C++ type written: 53 for double,
    24 for float.  This is the inverse of :func:`decode_float`; ByteLocker never
    writes dlib files, it uses this to check the decoder against dlib's rules.
    """
    value = float(value)
    if math.isnan(value):
        mantissa, exponent = 0, EXP_NAN
    elif value == math.inf:
        mantissa, exponent = 0, EXP_INF
    elif value == -math.inf:
        mantissa, exponent = 0, EXP_NINF
    else:
        fraction, exp = math.frexp(value)
        mantissa = int(fraction * (1 << digits))
        exponent = exp - digits
        # dlib drops whole zero low-order bytes to keep the integers short.
        for _ in range(8):
            if mantissa & 0xFF:
                break
            mantissa >>= 8
            exponent += 8
    return encode_int(mantissa) + encode_int(exponent)


def decode_int(data, offset=0):
    """Decode one dlib integer from ``data`` at ``offset``; return ``(value, next_offset)``."""
    reader = Reader(data, "the data")
    reader.pos = offset
    return reader.int(), reader.pos


def decode_float(data, offset=0):
    """Decode one dlib portable float from ``data`` at ``offset``; return ``(value, next_offset)``."""
    reader = Reader(data, "the data")
    reader.pos = offset
    return reader.float(), reader.pos


class Reader:
    """A cursor over bytes in dlib's serialisation format.

    Every read checks bounds and form, and raises :class:`ModelFormatError`
    naming ``name`` and the byte offset, so a truncated or corrupt file says so
    instead of producing garbage weights.
    """

    def __init__(self, data, name, kind="dlib serialisation"):
        self._data = memoryview(data).cast("B")
        self.name = name
        self.kind = kind
        self.pos = 0

    def fail(self, what):
        raise ModelFormatError(f"{self.name} is not valid {self.kind}: {what} at byte {self.pos}.")

    def _take(self, n):
        if n < 0 or self.pos + n > len(self._data):
            raise ModelFormatError(
                f"{self.name} is truncated: needed {n} more bytes at byte {self.pos}, "
                f"but the file has {len(self._data)} bytes."
            )
        chunk = self._data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    @property
    def remaining(self):
        return len(self._data) - self.pos

    def int(self):
        """A signed integer."""
        control = self._take(1)[0]
        size = control & 0x0F
        if control & 0x70 or not 1 <= size <= 8:
            self.pos -= 1
            self.fail(f"bad integer control byte 0x{control:02x}")
        value = int.from_bytes(self._take(size), "little")
        return -value if control & 0x80 else value

    def uint(self):
        """An unsigned integer (no sign bit allowed)."""
        control = self._take(1)[0]
        if control & 0xF0 or not 1 <= control <= 8:
            self.pos -= 1
            self.fail(f"bad unsigned integer control byte 0x{control:02x}")
        return int.from_bytes(self._take(control), "little")

    def float(self):
        """A portable float, as a Python float (a C++ double)."""
        mantissa = self.int()
        exponent = self.int()
        if not -32768 <= exponent <= 32767 or not -(1 << 63) <= mantissa < (1 << 63):
            self.fail("a float's mantissa or exponent out of range")
        if exponent < EXP_INF:
            try:
                return math.ldexp(float(mantissa), exponent)
            except OverflowError:
                return math.copysign(math.inf, mantissa)
        if exponent == EXP_INF:
            return math.inf
        if exponent == EXP_NINF:
            return -math.inf
        return math.nan

    def string(self, limit=256):
        n = self.uint()
        if n > limit:
            self.pos -= 1
            self.fail(f"a string of {n} bytes where a short name was expected")
        return bytes(self._take(n)).decode("latin-1")

    def expect(self, *names):
        """Read a layer's version string and check it is one of ``names``."""
        start = self.pos
        got = self.string()
        if got not in names:
            self.pos = start
            self.fail(f"found {got!r} where {' or '.join(map(repr, names))} was expected")
        return got

    def bool(self):
        byte = self._take(1)[0]
        if byte not in (0x30, 0x31):
            self.pos -= 1
            self.fail(f"bad boolean byte 0x{byte:02x}")
        return byte == 0x31

    def version(self, *allowed):
        start = self.pos
        got = self.int()
        if got not in allowed:
            self.pos = start
            self.fail(f"version {got} where {' or '.join(map(str, allowed))} was expected")
        return got

    def tensor(self):
        """A tensor, as a float32 array of shape ``(samples, k, rows, columns)``."""
        self.version(2)
        shape = tuple(self.int() for _ in range(4))
        if any(d < 0 for d in shape):
            self.fail(f"a tensor of negative shape {shape}")
        count = int(np.prod(shape, dtype=np.int64))
        raw = self._take(4 * count)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)

    def alias_tensor(self):
        self.version(1)
        return tuple(self.int() for _ in range(4))


# --------------------------------------------------------------------------- network layout


@dataclass(frozen=True)
class Layer:
    """One layer of the network in forward order (input side first).

    ``kind`` is one of ``con``, ``affine``, ``relu``, ``max_pool``, ``avg_pool``,
    ``avg_pool_everything``, ``fc``, ``tag``, ``skip`` and ``add_prev``.  For
    ``tag``/``skip``/``add_prev``, ``tag`` is the tag number (1 or 2).
    """

    kind: str
    filters: int = 0
    size: int = 0
    stride: int = 1
    tag: int = 0

    @property
    def padding(self):
        # dlib's default for con_/max_pool_/avg_pool_: half the window when the
        # stride is 1, none otherwise.
        return self.size // 2 if self.stride == 1 else 0

    @property
    def is_wrapper(self):
        """Tag and skip layers are plain wrappers with no layer object of their own."""
        return self.kind in ("tag", "skip")


def _block(filters, stride):
    # block<N,BN,stride,SUBNET> = BN<con<N,3,3,1,1,relu<BN<con<N,3,3,stride,stride,SUBNET>>>>>
    return [Layer("con", filters, 3, stride), Layer("affine"), Layer("relu"),
            Layer("con", filters, 3, 1), Layer("affine")]


def _ares(filters):
    # relu<add_prev1<block<N,affine,1,tag1<SUBNET>>>>
    return [Layer("tag", tag=1), *_block(filters, 1), Layer("add_prev", tag=1), Layer("relu")]


def _ares_down(filters):
    # relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,affine,2,tag1<SUBNET>>>>>>>
    return [Layer("tag", tag=1), *_block(filters, 2), Layer("tag", tag=2), Layer("skip", tag=1),
            Layer("avg_pool", size=2, stride=2), Layer("add_prev", tag=2), Layer("relu")]


def face_resnet_layout():
    """The layers of dlib's face ResNet, input side first (``anet_type`` in dnn_face_recognition_ex.cpp)."""
    layers = [Layer("con", 32, 7, 2), Layer("affine"), Layer("relu"), Layer("max_pool", size=3, stride=2)]
    layers += _ares(32) * 3                                   # alevel4
    layers += _ares_down(64) + _ares(64) * 3                  # alevel3
    layers += _ares_down(128) + _ares(128) * 2                # alevel2
    layers += _ares_down(256) + _ares(256) * 2                # alevel1
    layers += _ares_down(256)                                 # alevel0
    layers += [Layer("avg_pool_everything"), Layer("fc", filters=128)]
    return layers


# --------------------------------------------------------------------------- parsed network


@dataclass
class ResNet:
    """dlib's face ResNet as numpy arrays.

    ``params[i]`` holds the arrays of ``layers[i]``: for ``con`` ``weights``
    ``(filters, channels, rows, cols)`` and ``bias`` ``(filters,)``; for
    ``affine`` ``gamma`` and ``beta`` ``(channels,)`` (dlib's batch-norm, already
    folded); for ``fc`` ``weights`` ``(inputs, outputs)``.  ``input_mean`` is the
    RGB mean subtracted by dlib's input layer before dividing by 256.
    """

    layers: list
    params: list
    input_mean: np.ndarray
    input_size: int = 150
    loss_margin: float = 0.0
    loss_threshold: float = 0.0
    source: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def parameter_count(self):
        return int(sum(a.size for p in self.params for a in p.values()))

    def arrays(self):
        """All arrays flattened into a name -> array dict (for ``np.savez``)."""
        out = {"input_mean": self.input_mean}
        for i, p in enumerate(self.params):
            for key, value in p.items():
                out[f"l{i:03d}_{key}"] = value
        return out

    @classmethod
    def from_arrays(cls, arrays, *, source=""):
        """Rebuild from :meth:`arrays` output, checking every shape against the layout."""
        layers = face_resnet_layout()
        params = [{} for _ in layers]
        for name in arrays:
            if name == "input_mean":
                continue
            try:
                index, key = int(name[1:4]), name[5:]
                params[index][key] = np.asarray(arrays[name], dtype=np.float32)
            except (ValueError, IndexError):
                raise ModelFormatError(f"{source or 'The converted weights'} hold an unexpected array {name!r}.")
        net = cls(layers, params, np.asarray(arrays["input_mean"], dtype=np.float32), source=source)
        net.check_shapes()
        return net

    def check_shapes(self):
        """Raise :class:`ModelFormatError` unless every layer has arrays of the right shapes."""
        channels = 3
        for i, (layer, p) in enumerate(zip(self.layers, self.params)):
            expected = {}
            if layer.kind == "con":
                expected = {"weights": (layer.filters, channels, layer.size, layer.size), "bias": (layer.filters,)}
            elif layer.kind == "affine":
                expected = {"gamma": (channels,), "beta": (channels,)}
            elif layer.kind == "fc":
                expected = {"weights": (channels, layer.filters)}
            got = {k: tuple(v.shape) for k, v in p.items()}
            if got != expected:
                raise ModelFormatError(
                    f"{self.source or 'The network'}: layer {i} ({layer.kind}) has arrays {got}, expected {expected}."
                )
            if layer.kind in ("con", "fc"):
                channels = layer.filters
            # add_prev's output has as many channels as the wider operand; in this
            # network that is always the block output, already tracked above.
        if self.input_mean.shape != (3,):
            raise ModelFormatError(f"{self.source or 'The network'}: the input mean has shape {self.input_mean.shape}.")


# --------------------------------------------------------------------------- parsing


def read_resnet(path):
    """Parse dlib's face ResNet file at ``path`` into a :class:`ResNet`.

    Raises :class:`ModelFormatError` (naming the file and byte offset) if the
    file is truncated, corrupt, or holds a different network.
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ModelFormatError(f"Cannot read the face model {path}: {exc.strerror or exc}.") from exc
    return parse_resnet(data, name=f"The face model {os.path.basename(path)}")


def parse_resnet(data, *, name="The face model"):
    """Parse dlib's face ResNet from the bytes of its ``.dat`` file."""
    r = Reader(data, name, "dlib face ResNet data")
    layers = face_resnet_layout()

    r.version(1)                                   # add_loss_layer
    r.expect("loss_metric_", "loss_metric_2")
    margin = r.float()
    threshold = r.float()

    # The wrappers' versions, outermost first: add_layer 2 (3 next to the input
    # layer), tag/skip 1.
    for i, layer in enumerate(reversed(layers)):
        if layer.is_wrapper:
            r.version(1)
        elif i == len(layers) - 1:
            r.version(3)
        else:
            r.version(2)

    r.expect("input_rgb_image_sized")
    input_mean = np.array([r.float(), r.float(), r.float()], dtype=np.float32)
    size = (r.int(), r.int())
    if size != (150, 150):
        r.fail(f"an input size of {size[0]}x{size[1]} (expected 150x150)")

    params = []
    channels = 3
    for i, layer in enumerate(layers):
        if layer.is_wrapper:
            params.append({})
            continue
        p, channels = _read_layer(r, layer, channels, i)
        params.append(p)
        _read_layer_state(r, first=(i == 0))

    if r.remaining:
        r.fail(f"{r.remaining} unexpected bytes after the network")
    net = ResNet(layers, params, input_mean, 150, margin, threshold, source=name)
    net.check_shapes()
    return net


def _read_layer_state(r, *, first):
    # add_layer's bookkeeping after the layer object: three flags and the
    # training-time tensors (empty in a saved model, but they must be skipped).
    for _ in range(3):
        r.bool()
    for _ in range(3):
        r.tensor()
    if first:
        r.int()                                    # _sample_expansion_factor


def _read_layer(r, layer, channels, index):
    where = f"layer {index} ({layer.kind})"
    if layer.kind == "con":
        r.expect("con_4")
        flat = r.tensor().reshape(-1)
        dims = [r.int() for _ in range(5)]          # filters, rows, cols, stride_y, stride_x
        pads = [r.int(), r.int()]
        wshape = r.alias_tensor()
        bshape = r.alias_tensor()
        for _ in range(4):                          # learning-rate and weight-decay multipliers
            r.float()
        want = [layer.filters, layer.size, layer.size, layer.stride, layer.stride]
        if dims != want or pads != [layer.padding] * 2:
            r.fail(f"{where}: convolution {dims} padding {pads}, expected {want} padding {layer.padding}")
        if wshape != (layer.filters, channels, layer.size, layer.size) or bshape != (1, layer.filters, 1, 1):
            r.fail(f"{where}: filter shape {wshape} for {channels} input channels")
        nw = int(np.prod(wshape))
        if flat.size != nw + layer.filters:
            r.fail(f"{where}: {flat.size} parameters for filters {wshape}")
        return {"weights": flat[:nw].reshape(wshape), "bias": flat[nw:].copy()}, layer.filters

    if layer.kind == "affine":
        r.expect("affine_")
        flat = r.tensor().reshape(-1)
        gshape = r.alias_tensor()
        bshape = r.alias_tensor()
        mode = r.int()
        if mode != 0 or gshape != (1, channels, 1, 1) or bshape != gshape or flat.size != 2 * channels:
            r.fail(f"{where}: affine of mode {mode} and shape {gshape} over {channels} channels")
        return {"gamma": flat[:channels].copy(), "beta": flat[channels:].copy()}, channels

    if layer.kind == "relu":
        r.expect("relu_")
        return {}, channels

    if layer.kind in ("max_pool", "avg_pool", "avg_pool_everything"):
        r.expect("avg_pool_2" if layer.kind != "max_pool" else "max_pool_2")
        dims = [r.int() for _ in range(6)]          # rows, cols, stride_y, stride_x, padding_y, padding_x
        if layer.kind == "avg_pool_everything":
            want = [0, 0, 1, 1, 0, 0]
        else:
            want = [layer.size, layer.size, layer.stride, layer.stride, layer.padding, layer.padding]
        if dims != want:
            r.fail(f"{where}: pooling {dims}, expected {want}")
        return {}, channels

    if layer.kind == "add_prev":
        r.expect("add_prev_")
        return {}, channels

    if layer.kind == "fc":
        r.expect("fc_2")
        outputs, inputs = r.uint(), r.uint()
        params = r.tensor()
        wshape = r.alias_tensor()
        bshape = r.alias_tensor()
        bias_mode = r.int()
        for _ in range(4):
            r.float()
        # FC_NO_BIAS is 1: the network declares fc_no_bias.
        if (outputs, inputs) != (layer.filters, channels) or bias_mode != 1:
            r.fail(f"{where}: fc {inputs}->{outputs} bias mode {bias_mode}, expected {channels}->{layer.filters} without bias")
        if params.shape != (inputs, outputs, 1, 1) or wshape != (inputs, outputs, 1, 1):
            r.fail(f"{where}: fc parameters of shape {params.shape}")
        return {"weights": params.reshape(inputs, outputs).copy()}, outputs

    raise AssertionError(f"unknown layer kind {layer.kind}")
