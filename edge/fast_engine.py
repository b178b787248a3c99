"""The ``fast`` descriptor engine: dlib's own face ResNet, run by onnxruntime.

``make_engine(section, cache_dir=...)`` returns the descriptor engine that
``recognition.engine`` asks for (``dlib`` or ``fast``).  Both give the same
descriptors; ``fast`` costs about a twentieth of the ``dlib-bin`` wheel's time
per face, because that wheel is built without BLAS.

How ``fast`` gets dlib's numbers without dlib:

1. :mod:`edge.dlib_format` parses ``dlib_face_recognition_resnet_model_v1.dat``
   into numpy arrays, once per model file; the result is cached as ``.npz`` in
   ``cache_dir``, keyed by the file's SHA-256.
2. :func:`build_onnx` turns the arrays into an ONNX graph that does exactly what
   dlib's layers do: ``(pixel - mean) / 256`` per channel, convolutions with
   dlib's padding rule, the affine (frozen batch-norm) layers folded into the
   convolution before them, max and average pooling, residual additions that
   zero-pad the smaller operand as dlib's ``add_prev`` does, global average
   pooling and the 256->128 matrix.  dlib adds no normalisation at the end.
3. onnxruntime's CPU provider runs the graph (MLAS kernels, NEON on aarch64).

At start-up :func:`make_engine` describes one real face with both engines and
keeps ``fast`` only if no component differs by more than :data:`TOLERANCE`.
Otherwise it logs why, falls back to dlib's engine and says so in
``engine.fallback_reason`` for the door status.
"""

import hashlib
import importlib.util
import logging
import math
import os
import pathlib
import time
import zipfile

import numpy as np

from bytelocker.errors import ByteLockerError, ImageError, ModelFormatError
from edge.describe import CHIP_SIZE, DlibEngine, FaceDescriber
from edge.dlib_format import ResNet, read_resnet
from edge.models import ModelPaths, model_paths

logger = logging.getLogger(__name__)

TOLERANCE = 1e-4
"""Largest absolute difference per descriptor component accepted at start-up."""

CACHE_FORMAT = 1
"""Bump when the cached arrays' meaning changes, so old caches are not reused."""

BATCH = 16
"""Chips per onnxruntime call (as dlib's binding batches); bounds peak memory."""

ONNX_OPSET = 17
ONNX_IR_VERSION = 8  # readable by onnxruntime 1.16, the last with glibc-2.17 (manylinux2014) aarch64 wheels


def default_cache_dir():
    """``$BYTELOCKER_CACHE_DIR``, else ``~/.cache/bytelocker``."""
    return os.environ.get("BYTELOCKER_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "bytelocker")


def file_sha256(path):
    """Hex SHA-256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_path_for(resnet_path, cache_dir):
    """Where the converted weights of ``resnet_path`` are cached."""
    key = file_sha256(resnet_path)[:24]
    return pathlib.Path(cache_dir) / f"dlib-face-resnet-{key}-f{CACHE_FORMAT}.npz"


def converted_weights(resnet_path, cache_dir):
    """Return ``(ResNet, cache_file, state)``: the parsed network, converting at most once.

    ``state`` is ``"reused"`` when the cache was read, ``"converted"`` when the
    ``.dat`` was parsed and the cache written.  An unreadable cache is logged
    and rebuilt.  Raises :class:`ModelFormatError` if the ``.dat`` itself is bad.
    """
    cache_file = cache_path_for(resnet_path, cache_dir)
    if cache_file.exists():
        try:
            with np.load(cache_file, allow_pickle=False) as arrays:
                net = ResNet.from_arrays({k: arrays[k] for k in arrays.files}, source=str(cache_file))
            return net, cache_file, "reused"
        except (ModelFormatError, OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            logger.warning("converted face weights %s are unreadable (%s); converting %s again",
                           cache_file, exc, resnet_path)
    net = read_resnet(resnet_path)
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        partial = cache_file.with_name(cache_file.name + f".{os.getpid()}.tmp")
        with open(partial, "wb") as fh:
            np.savez(fh, **net.arrays())
        # Rename last so a crash mid-write never leaves a half file under the real name.
        os.replace(partial, cache_file)
    except OSError as exc:
        logger.warning("cannot cache converted face weights in %s (%s); converting at every start",
                       cache_file.parent, exc.strerror or exc)
        return net, None, "converted"
    return net, cache_file, "converted"


# --------------------------------------------------------------------------- ONNX graph


def build_onnx(net):
    """Return the ONNX model (``onnx.ModelProto``) computing ``net``'s descriptors.

    Input ``chips``: uint8 ``(n, 150, 150, 3)`` RGB.  Output ``descriptors``:
    float32 ``(n, 128)``.
    """
    from onnx import TensorProto, helper, numpy_helper

    nodes, weights = [], []
    shapes = {}
    names = iter(range(1, 1 << 30))

    def fresh(prefix):
        return f"{prefix}{next(names)}"

    def constant(name, value, dtype=np.float32):
        weights.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=dtype), name))
        return name

    def node(op, inputs, shape, prefix, **attrs):
        out = fresh(prefix)
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        shapes[out] = shape
        return out

    def pooled(size, k, stride, pad=0):
        return (size + 2 * pad - k) // stride + 1

    size = net.input_size
    x = node("Cast", ["chips"], (3, size, size), "float", to=TensorProto.FLOAT)
    x = node("Transpose", [x], (3, size, size), "nchw", perm=[0, 3, 1, 2])
    # dlib's input_rgb_image_sized: (pixel - mean) / 256 per channel; 1/256 is exact.
    x = node("Sub", [x, constant("input_mean", net.input_mean.reshape(1, 3, 1, 1))], shapes[x], "centred")
    x = node("Mul", [x, constant("input_scale", np.float32(1.0 / 256.0))], shapes[x], "scaled")

    tags = {}
    layers = list(zip(net.layers, net.params))
    i = 0
    while i < len(layers):
        layer, p = layers[i]
        c, h, w = (*shapes[x], 1, 1)[:3]
        if layer.kind == "con":
            kernel, bias = p["weights"], p["bias"]
            if i + 1 < len(layers) and layers[i + 1][0].kind == "affine":
                # Every convolution here feeds an affine layer: fold gamma*(Wx+b)+beta
                # into the convolution, one pass over the activations fewer.
                gamma, beta = layers[i + 1][1]["gamma"], layers[i + 1][1]["beta"]
                kernel = kernel * gamma[:, None, None, None]
                bias = bias * gamma + beta
                i += 1
            name = fresh("conv")
            pad, k, s = layer.padding, layer.size, layer.stride
            x = node("Conv", [x, constant(name + "_w", kernel), constant(name + "_b", bias)],
                     (layer.filters, pooled(h, k, s, pad), pooled(w, k, s, pad)), "conv",
                     kernel_shape=[k, k], strides=[s, s], pads=[pad] * 4)
        elif layer.kind == "affine":
            name = fresh("affine")
            x = node("Mul", [x, constant(name + "_g", p["gamma"].reshape(1, -1, 1, 1))], (c, h, w), "scale")
            x = node("Add", [x, constant(name + "_b", p["beta"].reshape(1, -1, 1, 1))], (c, h, w), "shift")
        elif layer.kind == "relu":
            x = node("Relu", [x], (c, h, w), "relu")
        elif layer.kind in ("max_pool", "avg_pool"):
            k, s = layer.size, layer.stride
            op = "MaxPool" if layer.kind == "max_pool" else "AveragePool"
            x = node(op, [x], (c, pooled(h, k, s), pooled(w, k, s)), "pool", kernel_shape=[k, k], strides=[s, s])
        elif layer.kind == "tag":
            tags[layer.tag] = x
        elif layer.kind == "skip":
            x = tags[layer.tag]
        elif layer.kind == "add_prev":
            # dlib's add_prev sums tensors of different sizes as if the smaller
            # were zero-padded at the end of each dimension (more channels, and
            # 3x3 vs 4x4 maps at the 256-filter levels).
            other = tags[layer.tag]
            target = tuple(max(a, b) for a, b in zip(shapes[x], shapes[other]))
            padded = []
            for operand in (x, other):
                if shapes[operand] != target:
                    grow = [t - s for t, s in zip(target, shapes[operand])]
                    pads = constant(fresh("pads"), [0, 0, 0, 0, 0, *grow], np.int64)
                    operand = node("Pad", [operand, pads], target, "padded")
                padded.append(operand)
            x = node("Add", padded, target, "sum")
        elif layer.kind == "avg_pool_everything":
            x = node("GlobalAveragePool", [x], (c, 1, 1), "gap")
            x = node("Flatten", [x], (c,), "flat")
        elif layer.kind == "fc":
            nodes.append(helper.make_node("MatMul", [x, constant("fc_w", p["weights"])], ["descriptors"]))
            x = "descriptors"
        i += 1
    if x != "descriptors":
        raise ModelFormatError(f"{net.source}: the network does not end in its 128-d fc layer.")

    graph = helper.make_graph(
        nodes, "dlib_face_recognition_resnet_model_v1",
        [helper.make_tensor_value_info("chips", TensorProto.UINT8, ["n", size, size, 3])],
        [helper.make_tensor_value_info("descriptors", TensorProto.FLOAT, ["n", 128])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                              producer_name="bytelocker")
    model.ir_version = ONNX_IR_VERSION
    return model


# --------------------------------------------------------------------------- engines


class FastEngine:
    """dlib's face ResNet on onnxruntime; same interface as :class:`edge.describe.DlibEngine`.

    :param resnet_path: ``dlib_face_recognition_resnet_model_v1.dat``.
    :param cache_dir: folder for the converted weights (default
        :func:`default_cache_dir`); never inside the source tree.
    :param threads: onnxruntime threads per call.  1 (default) leaves the other
        cores to capture and detection; on an idle 4-core board more threads cut
        latency, but on a busy or 2-core one they only add contention.

    Construction does not compare against dlib; :func:`make_engine` does.
    """

    name = "fast"

    def __init__(self, resnet_path, *, cache_dir=None, threads=1):
        import onnxruntime

        started = time.perf_counter()
        self.resnet_path = str(resnet_path)
        self.cache_dir = str(cache_dir or default_cache_dir())
        self.threads = int(threads)
        net, self.cache_file, self.cache_state = converted_weights(self.resnet_path, self.cache_dir)
        self.parameter_count = net.parameter_count
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        if self.threads != 1:
            # Spinning workers would steal the cores the capture and detection threads need.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = onnxruntime.InferenceSession(
            build_onnx(net).SerializeToString(), options, providers=["CPUExecutionProvider"])
        self.fallback_reason = None
        self.check = None
        self.startup_seconds = time.perf_counter() - started

    def describe_chips(self, chips):
        """Return ``(n, 128)`` float32 descriptors of aligned 150x150 RGB uint8 chips."""
        if len(chips) == 0:
            return np.zeros((0, 128), np.float32)
        try:
            batch = np.ascontiguousarray(np.asarray(chips))
        except ValueError:  # chips of different shapes
            batch = np.empty((len(chips), 0))
        if batch.dtype != np.uint8 or batch.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
            raise ImageError(
                f"Face chips must be {CHIP_SIZE}x{CHIP_SIZE} RGB uint8 arrays (dlib.get_face_chip), "
                f"got an array of shape {batch.shape} and type {batch.dtype}."
            )
        parts = [self._session.run(None, {"chips": batch[i:i + BATCH]})[0] for i in range(0, len(batch), BATCH)]
        return np.concatenate(parts).astype(np.float32, copy=False)


class CheckedDlibEngine(DlibEngine):
    """dlib's own engine, as returned by :func:`make_engine`.

    ``fallback_reason`` is ``None`` when ``dlib`` was configured, or the reason
    the ``fast`` engine was refused (for the door status).
    """

    def __init__(self, resnet_path, *, fallback_reason=None, check=None):
        super().__init__(resnet_path)
        self.fallback_reason = fallback_reason
        self.check = check


# --------------------------------------------------------------------------- start-up check


def _sample_photo_paths():
    """Real face photos that installed packages ship (we copy none into the repo)."""
    found = []
    for package, parts, label in (
        ("skimage", ("data", "astronaut.png"), "scikit-image's astronaut (Eileen Collins)"),
        ("matplotlib", ("mpl-data", "sample_data", "grace_hopper.jpg"), "matplotlib's grace_hopper"),
    ):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        path = os.path.join(list(spec.submodule_search_locations)[0], *parts)
        if os.path.isfile(path):
            found.append((path, label))
    return found


def synthetic_chip():
    """A fixed 150x150 test pattern, used only when no real face photo is installed."""
    y, x = np.mgrid[0:CHIP_SIZE, 0:CHIP_SIZE].astype(np.float32) / CHIP_SIZE
    red = 128 + 100 * np.sin(6.1 * x + 2.3 * y)
    green = 128 + 90 * np.cos(4.7 * y - 3.1 * x * y)
    blue = 255 * ((x - 0.5) ** 2 + (y - 0.45) ** 2)
    return np.clip(np.dstack([red, green, blue]), 0, 255).astype(np.uint8)


def reference_chip(describer, check_image=None):
    """Return ``(chip, label)``: the face chip used to compare the engines.

    Tries ``check_image`` (a path or RGB array the door provides), then the
    sample photos of scikit-image and matplotlib, and only then a synthetic
    pattern (which still exercises every weight, but not with a face).
    """
    from edge.detect import FaceDetector
    from edge.images import load_rgb

    candidates = []
    if check_image is not None:
        candidates.append((check_image, "the door's check image"))
    candidates += _sample_photo_paths()
    detector = FaceDetector(model="hog", scale=1.0, upsample=1, min_face_px=40)
    for source, label in candidates:
        try:
            frame = load_rgb(source) if isinstance(source, (str, os.PathLike)) else source
            boxes = detector.detect(frame)
        except ByteLockerError as exc:
            logger.warning("cannot use %s for the engine check: %s", label, exc)
            continue
        if boxes:
            return describer.chips(frame, boxes[:1])[0], label
        logger.warning("no face found in %s for the engine check", label)
    logger.warning("no real face photo is installed for the engine check; using a synthetic pattern")
    return synthetic_chip(), "a synthetic test pattern"


def compare_engines(fast, reference, chips):
    """Largest absolute per-component difference between two engines on ``chips``."""
    got = np.asarray(fast.describe_chips(chips), np.float64)
    want = np.asarray(reference.describe_chips(chips), np.float64)
    if got.shape != want.shape:
        return math.inf
    diff = np.abs(got - want)
    return float(diff.max()) if np.all(np.isfinite(diff)) else math.inf


def make_engine(section, *, describer_models=None, cache_dir=None, check_image=None, threads=1):
    """Build the descriptor engine ``section.engine`` names, checked at start-up.

    :param section: the ``recognition`` config section (``engine``, ``models_dir``).
    :param describer_models: :class:`edge.models.ModelPaths` or a folder of dlib
        model files; default ``section.models_dir`` or the installed package.
    :param cache_dir: where converted weights are kept (default
        ``$BYTELOCKER_CACHE_DIR`` or ``~/.cache/bytelocker``).
    :param check_image: optional photo (path or RGB array) of a real face for
        the start-up check; otherwise a sample photo of an installed package.
    :param threads: onnxruntime threads for ``fast``.

    For ``fast``: converts (or reuses) the weights, describes one real face with
    both engines, and returns the :class:`FastEngine` only if every component
    agrees within :data:`TOLERANCE`.  Otherwise it logs an error, deletes the
    cached conversion (so the next start converts afresh) and returns a
    :class:`CheckedDlibEngine` whose ``fallback_reason`` says why.  Every
    returned engine has ``name``, ``describe_chips``, ``fallback_reason`` and
    ``check`` (a dict describing the start-up comparison, or ``None``).
    Raises :class:`edge.models.ModelFilesMissing` if dlib's own model is
    missing: then no engine can work.
    """
    if isinstance(describer_models, ModelPaths):
        paths = describer_models
        models_dir = os.path.dirname(paths.resnet)
    else:
        models_dir = describer_models or getattr(section, "models_dir", None)
        paths = model_paths(models_dir)
    if section.engine == "dlib":
        return CheckedDlibEngine(paths.resnet)
    if section.engine != "fast":
        raise ValueError(f"unknown descriptor engine {section.engine!r}")

    started = time.perf_counter()
    try:
        fast = FastEngine(paths.resnet, cache_dir=cache_dir, threads=threads)
    except Exception as exc:  # noqa: BLE001 - any failure of the optional engine means "use dlib"
        reason = f"the fast engine could not start: {exc}"
        logger.error("descriptor engine: %s; using dlib's engine instead", reason,
                     exc_info=not isinstance(exc, ByteLockerError))
        return CheckedDlibEngine(paths.resnet, fallback_reason=reason)

    reference = CheckedDlibEngine(paths.resnet)
    describer = FaceDescriber(engine=reference, models_dir=models_dir)
    chip, label = reference_chip(describer, check_image)
    try:
        diff, failure = compare_engines(fast, reference, [chip]), None
    except Exception as exc:  # noqa: BLE001 - as above: a fast engine that cannot describe is refused
        diff, failure = math.inf, exc
        logger.debug("fast engine failed its check", exc_info=True)
    check = {"image": label, "max_abs_diff": diff, "tolerance": TOLERANCE,
             "cache": fast.cache_state, "cache_file": str(fast.cache_file) if fast.cache_file else None,
             "seconds": round(time.perf_counter() - started, 3)}
    if not diff <= TOLERANCE:
        if failure is not None:
            reason = f"the fast engine failed to describe {label}: {failure}"
        else:
            reason = (f"the fast engine's descriptor of {label} differs from dlib's by {diff:.3g} "
                      f"(tolerance {TOLERANCE:g})")
        logger.error("descriptor engine: %s; using dlib's engine instead (converted weights %s removed)",
                     reason, fast.cache_file)
        if fast.cache_file is not None:
            try:
                os.remove(fast.cache_file)
            except OSError:
                pass
        reference.fallback_reason = reason
        reference.check = check
        return reference
    logger.info("descriptor engine: fast (max difference from dlib %.2g on %s; weights %s %s; %.2f s)",
                diff, label, fast.cache_state, fast.cache_file, check["seconds"])
    fast.check = check
    return fast
