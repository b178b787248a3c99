"""Descriptor engines compared: ``python bench/descriptor.py --faces DIR [--json]``.

Finds every face in the images under DIR (recursively), aligns each one into
dlib's 150x150 chip once, then times only the descriptor step of each engine:
dlib-bin's own ResNet (``dlib``) and ByteLocker's onnxruntime one (``fast``).

Each engine runs in its own child process, so its start-up cost (including the
fast engine's first-run weight conversion into an empty cache) and its peak
memory are its own.  Timings are per descriptor, single-threaded and with all
cores, one chip per call and four.  On a shared machine they are noisy: both
engines are measured in the same run, compare the ratio.

``--json`` prints one object: ``dlib_ms``, ``fast_ms`` and ``speedup`` (single
thread, one chip per call), ``max_abs_diff`` (over every face and component),
plus the other figures.  ``--with-numpy`` also times a plain numpy
(im2col + BLAS matmul) forward pass of the same weights, the runtime we did not
pick.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


# --------------------------------------------------------------------------- chips


def find_chips(folder, limit=None):
    """Aligned chips of the largest face of every image under ``folder``.

    Returns ``(chips, images examined, images without a face)``.
    """
    from edge.describe import FaceDescriber
    from edge.detect import FaceDetector
    from edge.images import IMAGE_SUFFIXES, load_rgb

    paths = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(folder)
        for name in names if name.lower().endswith(IMAGE_SUFFIXES)
    )
    first = FaceDetector(model="hog", upsample=0, min_face_px=20)
    second = FaceDetector(model="hog", upsample=1, min_face_px=20)
    describer = FaceDescriber()
    chips, skipped, examined = [], 0, 0
    for path in paths:
        examined += 1
        frame = load_rgb(path)
        boxes = first.detect(frame) or second.detect(frame)
        if not boxes:
            skipped += 1
            continue
        chips += describer.chips(frame, boxes[:1])
        if limit and len(chips) >= limit:
            break
    return np.asarray(chips, dtype=np.uint8), examined, skipped


# --------------------------------------------------------------------------- numpy reference


def numpy_forward(net, chips):
    """The ResNet in plain numpy (NHWC, im2col + one BLAS matmul per convolution)."""
    from numpy.lib.stride_tricks import sliding_window_view

    def window(x, k, s):
        return sliding_window_view(x, (k, k), axis=(1, 2))[:, ::s, ::s]

    x = (chips.astype(np.float32) - net.input_mean) / np.float32(256)
    tags = {}
    for layer, p in zip(net.layers, net.params):
        if layer.kind == "con":
            pad = layer.padding
            if pad:
                x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
            w = p["weights"]
            cols = window(x, layer.size, layer.stride)          # n, ho, wo, c, kh, kw
            n, ho, wo = cols.shape[:3]
            cols = cols.reshape(n * ho * wo, -1)
            x = (cols @ w.reshape(w.shape[0], -1).T + p["bias"]).reshape(n, ho, wo, -1)
        elif layer.kind == "affine":
            x = x * p["gamma"] + p["beta"]
        elif layer.kind == "relu":
            x = np.maximum(x, 0)
        elif layer.kind == "max_pool":
            x = window(x, layer.size, layer.stride).max(axis=(-1, -2))
        elif layer.kind == "avg_pool":
            x = window(x, layer.size, layer.stride).mean(axis=(-1, -2))
        elif layer.kind == "tag":
            tags[layer.tag] = x
        elif layer.kind == "skip":
            x = tags[layer.tag]
        elif layer.kind == "add_prev":
            other = tags[layer.tag]
            out = np.zeros([max(a, b) for a, b in zip(x.shape, other.shape)], np.float32)
            out[:, :x.shape[1], :x.shape[2], :x.shape[3]] += x
            out[:, :other.shape[1], :other.shape[2], :other.shape[3]] += other
            x = out
        elif layer.kind == "avg_pool_everything":
            x = x.mean(axis=(1, 2))
        elif layer.kind == "fc":
            x = x @ p["weights"]
    return x


class NumpyEngine:
    name = "numpy"

    def __init__(self, resnet_path):
        from edge.dlib_format import read_resnet

        self._net = read_resnet(resnet_path)

    def describe_chips(self, chips):
        return numpy_forward(self._net, np.asarray(chips))


# --------------------------------------------------------------------------- timing


def build_engine(kind, threads, cache_dir):
    from edge.models import model_paths

    resnet = model_paths().resnet
    if kind == "dlib":
        from edge.describe import DlibEngine
        return DlibEngine(resnet)
    if kind == "numpy":
        return NumpyEngine(resnet)
    from edge.fast_engine import FastEngine
    return FastEngine(resnet, cache_dir=cache_dir, threads=threads)


def time_round(engine, chips, batch):
    """ms per descriptor for one pass over ``chips``, ``batch`` chips per call."""
    started = time.perf_counter()
    for i in range(0, len(chips), batch):
        engine.describe_chips(chips[i:i + batch])
    return (time.perf_counter() - started) * 1000 / len(chips)


def time_engines(kinds, chips, cache_dir, rounds):
    """Median ms per descriptor of every engine, setting by setting.

    The engines take turns round by round, so a burst of load from the other
    users of the machine hits all of them alike and the ratios stay fair.
    """
    from threadpoolctl import threadpool_limits

    cores = os.cpu_count() or 1
    settings = (("1thread", 1, 1), ("1thread", 1, 4), ("allcores", cores, 1), ("allcores", cores, 4))
    timings = {kind: {} for kind in kinds}
    for label, threads, batch in settings:
        with threadpool_limits(limits=threads):
            engines = {kind: build_engine(kind, threads, cache_dir) for kind in kinds}
            for engine in engines.values():
                engine.describe_chips(chips[:batch])      # first call allocates; not timed
            samples = {kind: [] for kind in kinds}
            for _ in range(rounds):
                for kind, engine in engines.items():
                    samples[kind].append(time_round(engine, chips, batch))
        for kind in kinds:
            timings[kind][f"ms_{label}_batch{batch}"] = statistics.median(samples[kind])
    return timings


# --------------------------------------------------------------------------- start-up and memory, in a child


def run_worker(args):
    """Start one engine in a fresh process, describe every chip once, report cost."""
    from threadpoolctl import threadpool_info, threadpool_limits

    chips = np.load(args.chips)
    result = {"engine": args.worker}
    with threadpool_limits(limits=1):
        started = time.perf_counter()
        engine = build_engine(args.worker, 1, args.cache)
        result["startup_s"] = time.perf_counter() - started
        if args.worker == "fast":
            result["startup_cache"] = engine.cache_state
        descriptors = np.concatenate([engine.describe_chips(chips[i:i + 4]) for i in range(0, len(chips), 4)])
    result["descriptors"] = descriptors.tolist()
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["blas"] = [
        {k: info.get(k) for k in ("internal_api", "version", "architecture")}
        for info in threadpool_info() if info.get("user_api") == "blas"
    ]
    json.dump(result, sys.stdout)


# --------------------------------------------------------------------------- main


def start_in_child(engine, chips_file, cache_dir):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", engine, "--chips", chips_file,
           "--cache", cache_dir]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"descriptor bench: the {engine} worker failed:\n{done.stderr}")
    return json.loads(done.stdout)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", help="folder of face photos (searched recursively)")
    parser.add_argument("--limit", type=int, default=None, help="stop after this many faces")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds per setting (median kept)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--with-numpy", action="store_true", help="also time a plain numpy forward pass")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--chips", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return run_worker(args)
    if not args.faces or not os.path.isdir(args.faces):
        parser.error("--faces must name a folder of face photos")

    chips, images, skipped = find_chips(args.faces, args.limit)
    if len(chips) == 0:
        parser.error(f"no faces found in {args.faces}")
    with tempfile.TemporaryDirectory(prefix="bytelocker-bench-") as tmp:
        chips_file = os.path.join(tmp, "chips.npy")
        np.save(chips_file, chips)
        engines = ["dlib", "fast"] + (["numpy"] if args.with_numpy else [])
        cache_dir = os.path.join(tmp, "cache")
        # The cache folder starts empty: the fast engine's first start includes its conversion.
        results = {e: start_in_child(e, chips_file, cache_dir) for e in engines}
        warm = start_in_child("fast", chips_file, cache_dir)
        results["fast"]["startup_warm_cache_s"] = warm["startup_s"]
        results["fast"]["peak_rss_warm_cache_mb"] = warm["peak_rss_mb"]
        for kind, timings in time_engines(engines, chips, cache_dir, args.rounds).items():
            results[kind].update(timings)

    want = np.asarray(results["dlib"].pop("descriptors"))
    report = {
        "faces": len(chips), "images": images, "images_without_face": skipped,
        "dlib_ms": results["dlib"]["ms_1thread_batch1"],
        "fast_ms": results["fast"]["ms_1thread_batch1"],
    }
    report["speedup"] = report["dlib_ms"] / report["fast_ms"]
    for name in engines[1:]:
        got = np.asarray(results[name].pop("descriptors"))
        key = "max_abs_diff" if name == "fast" else f"{name}_max_abs_diff"
        report[key] = float(np.abs(got - want).max())
    report["cores"] = os.cpu_count()
    report["load_average"] = os.getloadavg()
    report["openblas_coretype"] = os.environ.get("OPENBLAS_CORETYPE")
    report["engines"] = results
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"{len(chips)} faces from {images} images under {args.faces} "
          f"({skipped} without a face); {report['cores']} cores, load {report['load_average'][0]:.2f}, "
          f"OPENBLAS_CORETYPE={report['openblas_coretype']}")
    print(f"{'ms per descriptor':24}" + "".join(f"{e:>10}" for e in engines))
    for key, label in (("ms_1thread_batch1", "1 thread, batch 1"), ("ms_1thread_batch4", "1 thread, batch 4"),
                       ("ms_allcores_batch1", "all cores, batch 1"), ("ms_allcores_batch4", "all cores, batch 4")):
        print(f"{label:24}" + "".join(f"{results[e][key]:10.2f}" for e in engines))
    print(f"{'start-up, s':24}" + "".join(f"{results[e]['startup_s']:10.2f}" for e in engines)
          + f"   (fast: first run, {results['fast']['startup_cache']}; warm cache "
            f"{results['fast']['startup_warm_cache_s']:.2f} s)")
    print(f"{'peak memory, MB':24}" + "".join(f"{results[e]['peak_rss_mb']:10.0f}" for e in engines)
          + f"   (fast: first run; warm cache {results['fast']['peak_rss_warm_cache_mb']:.0f} MB)")
    print(f"speedup (1 thread, batch 1): {report['speedup']:.1f}x; "
          f"max |fast - dlib| = {report['max_abs_diff']:.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
