"""Benchmark: ByteLocker's recognition loop against face_recognition's README loop.

    python bench/pipeline.py --video FILE --enroll DIR [--json] [--core N]

Both loops run in this process, pinned to the same single CPU core, on the
same decoded frames (decoding is not timed for either):

* ours: :class:`edge.pipeline.RecognitionLoop` with the door.yaml defaults
  (or ``--config``): motion gate, HOG detection, tracking, descriptors only
  for undecided faces, K-of-N vote;
* peer: the loop face_recognition's README shows: ``face_locations`` then
  ``face_encodings`` on every frame, then ``compare_faces`` (tolerance 0.6)
  against the enrolled encodings, the best-distance match naming the person.

Reported: frames/s and ms/frame of each loop (from the CPU time each spends
per frame, so other work on the machine does not skew the ratio; wall-clock
figures too) and the ratio; who each loop
granted; time from an enrolled face first being visible to our grant, both in
video time (every frame processed) and in a live replay where frames arrive
at the clip's rate and the loop drops those it has no time for; CPU time per
frame on a static scene; 1:N match time for galleries of 1,000 to 1,000,000
descriptors; peak RSS.
"""

import argparse
import json
import os
import resource
import sys
import time
import warnings

import numpy as np

from config.door import DoorConfig
from config.loader import load_door_config
from edge.images import list_images, load_rgb
from edge.match import Gallery, match
from edge.pipeline import build_loop
from edge.video_eval import enrol_folder, read_video, run_video, video_info

MATCH_SIZES = (1_000, 10_000, 100_000, 1_000_000)
IDLE_FRAMES = 150


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def pin_to_one_core(core=None):
    """Pin this process to one CPU core (the last allowed one by default); return it."""
    allowed = sorted(os.sched_getaffinity(0))
    core = allowed[-1] if core is None else core
    os.sched_setaffinity(0, {core})
    return core


def run_ours(video, config, gallery):
    loop = build_loop(config, gallery)
    run = run_video(video, loop)
    run.engine = loop.describer.engine
    return run


def replay_live(video, config, gallery, *, clock_kind="cpu"):
    """Replay the clip as a camera would deliver it, to our loop on this CPU.

    The replay clock advances by each frame's processing time (``"cpu"``: the
    CPU time this process spent, i.e. as on a core of its own; ``"wall"``:
    elapsed time, including waiting for other work on a loaded machine).  The
    next frame processed is the newest one the camera has delivered by then;
    older ones are dropped, as a live door's frame grabber does.  Returns
    ``(decisions, frames_processed)``: decisions paired with the replay time
    at which they were made.
    """
    loop = build_loop(config, gallery)
    timer = time.process_time if clock_kind == "cpu" else time.perf_counter
    clock, processed, decisions = 0.0, 0, []
    pending = None  # the newest frame delivered while the loop was busy

    def process(frame, t):
        nonlocal clock, processed
        started = timer()
        made = loop.process(frame, t)
        clock = max(clock, t) + (timer() - started)
        processed += 1
        decisions.extend((clock, d) for d in made)

    for frame, t in read_video(video):
        if t < clock:
            pending = (frame, t)
            continue
        if pending is not None:
            process(*pending)
            pending = None
            if t < clock:
                pending = (frame, t)
                continue
        process(frame, t)
    if pending is not None:
        process(*pending)
    return decisions, processed


def engine_impact(video, config, gallery, engines=("dlib", "fast")):
    """The door's time to its first grant, live, with each descriptor engine.

    Each engine gets the same live replay (:func:`replay_live`, newest frame
    only, clock advancing by this core's CPU time), so a slower descriptor
    shows up as frames dropped and a later grant.
    """
    impact = {}
    for name in engines:
        rec = config.recognition.model_copy(update={"engine": name})
        replay, processed = replay_live(video, config.model_copy(update={"recognition": rec}), gallery)
        first = next(((clock, d) for clock, d in replay if d.decision == "granted"), None)
        row = {"frames_processed": processed, "person": None, "grant_ms_from_our_track": None}
        if first is not None:
            clock, decision = first
            track_start = decision.t - decision.decide_ms / 1000.0
            row.update(person=decision.person, grant_ms_from_our_track=round((clock - track_start) * 1000.0, 1))
        impact[name] = row
    return impact


def peer_known_faces(enroll_dir):
    """face_recognition's README enrolment: one encoding per photo."""
    import face_recognition

    names, encodings = [], []
    for person in sorted(os.listdir(enroll_dir)):
        folder = os.path.join(enroll_dir, person)
        if not os.path.isdir(folder):
            continue
        for path in list_images(folder):
            found = face_recognition.face_encodings(load_rgb(path))
            if found:
                names.append(person)
                encodings.append(found[0])
    return names, encodings


def run_peer(video, names, encodings):
    """face_recognition's README loop on every frame; returns per-frame results and timings."""
    import face_recognition

    frame_ms, frame_cpu_ms, hits = [], [], []
    for frame, t in read_video(video):
        started, cpu = time.perf_counter(), time.process_time()
        locations = face_recognition.face_locations(frame)
        found = face_recognition.face_encodings(frame, locations)
        seen = []
        for encoding in found:
            matches = face_recognition.compare_faces(encodings, encoding)
            distances = face_recognition.face_distance(encodings, encoding)
            best = int(np.argmin(distances)) if len(distances) else None
            if best is not None and matches[best]:
                seen.append(names[best])
        frame_ms.append((time.perf_counter() - started) * 1000.0)
        frame_cpu_ms.append((time.process_time() - cpu) * 1000.0)
        hits.append((t, seen))
    return frame_ms, frame_cpu_ms, hits


def idle_cost(video, config, gallery, frames=IDLE_FRAMES):
    """CPU ms per frame of our loop and the peer's detector on a static faceless frame."""
    from edge.detect import FaceDetector

    det = config.detection
    probe = FaceDetector(model=det.model, scale=det.scale, upsample=det.upsample, min_face_px=det.min_face_px)
    still, fps, source = None, video_info(video)[1] or 25.0, "a grey frame"
    for index, (frame, _) in enumerate(read_video(video)):
        if not probe.detect(frame):
            still, source = frame, f"frame {index} of the clip (no face)"
            break
        if index >= 60:
            break
    if still is None:
        height, width = frame.shape[:2]
        still = np.full((height, width, 3), 128, np.uint8)
    loop = build_loop(config, gallery)
    loop.process(still, 0.0)  # the first frame is always examined; time the steady state
    cpu = time.process_time()
    for i in range(1, frames + 1):
        loop.process(still, i / fps)
    ours = (time.process_time() - cpu) * 1000.0 / frames
    import face_recognition

    cpu = time.process_time()
    for _ in range(max(5, frames // 10)):
        face_recognition.face_encodings(still, face_recognition.face_locations(still))
    peer = (time.process_time() - cpu) * 1000.0 / max(5, frames // 10)
    return ours, peer, source


def match_times(sizes=MATCH_SIZES, repeats=20, seed=0):
    """ms for one probe against N random unit descriptors (2 per person), via :func:`edge.match.match`.

    The best of ``repeats`` runs is kept: on a busy machine that is the
    figure least disturbed by other work.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for n in sizes:
        matrix = np.empty((n, 128), np.float32)
        for start in range(0, n, 100_000):
            block = rng.standard_normal((min(100_000, n - start), 128)).astype(np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            matrix[start:start + len(block)] = block
        people = n // 2
        gallery = Gallery(matrix, list(range(people)), np.arange(0, n, 2)[:people])
        probe = matrix[:1] + rng.normal(0, 0.01, (1, 128)).astype(np.float32)
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            match(probe, gallery)
            best = min(best, time.perf_counter() - started)
        out[n] = best * 1000.0
        del gallery, matrix
    return out


def first_seen(hits, person):
    for t, seen in hits:
        if person in seen:
            return t
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", required=True)
    parser.add_argument("--enroll", required=True, help="folder of <person_id>/* photos")
    parser.add_argument("--config", "-c", help="door.yaml for our loop's settings (default: built-in defaults)")
    parser.add_argument("--core", type=int, help="CPU core to pin to (default: the last allowed one)")
    parser.add_argument("--skip-match", action="store_true", help="skip the 1:N match timings")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

    core = pin_to_one_core(args.core)
    config = load_door_config(args.config) if args.config else DoorConfig()
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else print
    count, fps, width, height = video_info(args.video)
    log(f"{args.video}: {count} frames {width}x{height} at {fps:.2f} fps; pinned to CPU core {core}; "
        f"load average {os.getloadavg()[0]:.1f} over {os.cpu_count()} cores")

    gallery = enrol_folder(args.enroll, build_loop(config).describer)
    ours = run_ours(args.video, config, gallery)
    ours_ms = sum(ours.frame_ms) / ours.frames
    ours_cpu = sum(ours.frame_cpu_ms) / ours.frames
    rss_ours = peak_rss_mb()
    log(f"ours: {1000.0 / ours_ms:.1f} frames/s, {ours_ms:.1f} ms/frame; "
        f"granted {sorted(map(str, ours.granted())) or 'no one'}")
    live, live_frames = replay_live(args.video, config, gallery, clock_kind="cpu")
    live_wall, live_wall_frames = replay_live(args.video, config, gallery, clock_kind="wall")

    names, encodings = peer_known_faces(args.enroll)
    peer_ms_list, peer_cpu_list, hits = run_peer(args.video, names, encodings)
    peer_ms = sum(peer_ms_list) / len(peer_ms_list)
    peer_cpu = sum(peer_cpu_list) / len(peer_cpu_list)
    peer_granted = {name for _, seen in hits for name in seen}
    log(f"peer: {1000.0 / peer_ms:.1f} frames/s, {peer_ms:.1f} ms/frame; "
        f"granted {sorted(peer_granted) or 'no one'}")

    latency, reported = [], set()
    for decision in ours.decisions:
        if decision.decision != "granted" or decision.person in reported:
            continue
        reported.add(decision.person)
        track_start = decision.t - decision.decide_ms / 1000.0
        peer_t = first_seen(hits, decision.person)
        visible = min(track_start, peer_t) if peer_t is not None else track_start
        cpu = sum(ms for ms, t in zip(ours.frame_cpu_ms, ours.frame_t) if visible <= t <= decision.t)

        def live_grant(replay):
            return next((clock for clock, d in replay
                         if d.decision == "granted" and d.person == decision.person), None)

        def since(clock, start):
            return round((clock - start) * 1000.0, 1) if clock is not None else None

        latency.append({
            "person": decision.person,
            "peer_first_seen_t": peer_t,
            "our_track_start_t": round(track_start, 3),
            "visible_t": round(visible, 3),
            "granted_t": round(decision.t, 3),
            "video_ms": round((decision.t - visible) * 1000.0, 1),
            "video_ms_from_our_track": round((decision.t - track_start) * 1000.0, 1),
            "cpu_ms_of_frames_in_between": round(cpu, 1),
            "live_ms": since(live_grant(live), visible),
            "live_ms_from_our_track": since(live_grant(live), track_start),
            "live_wall_ms": since(live_grant(live_wall), visible),
        })
    idle_ours, idle_peer, idle_source = idle_cost(args.video, config, gallery)
    log("our loop with each descriptor engine (live replay) ...")
    by_engine = engine_impact(args.video, config, gallery)
    result = {
        "video": args.video,
        "frames": ours.frames,
        "core": core,
        "load_average": round(os.getloadavg()[0], 2),
        # Both loops are single-threaded and pinned to one core, so CPU time per
        # frame is what each would take on a core of its own; wall-clock
        # figures also count waiting for other work on a loaded machine.
        "ours_fps": round(1000.0 / ours_cpu, 2),
        "ours_cpu_ms_per_frame": round(ours_cpu, 2),
        "peer_fps": round(1000.0 / peer_cpu, 2),
        "peer_cpu_ms_per_frame": round(peer_cpu, 2),
        "speedup": round(peer_cpu / ours_cpu, 2),
        "ours_wall_fps": round(1000.0 / ours_ms, 2),
        "ours_wall_ms_per_frame": round(ours_ms, 2),
        "peer_wall_fps": round(1000.0 / peer_ms, 2),
        "peer_wall_ms_per_frame": round(peer_ms, 2),
        "wall_speedup": round(peer_ms / ours_ms, 2),
        "engine": getattr(ours.engine, "name", "?"),
        "ours_granted": sorted(map(str, ours.granted())),
        "peer_granted": sorted(peer_granted),
        "same_decisions": ours.granted() == peer_granted,
        "ours_decisions": [
            {"t": round(d.t, 3), "track": d.track_id, "decision": d.decision, "person": d.person,
             "distance": round(d.distance, 4)} for d in ours.decisions
        ],
        "ours_faces_described": ours.stats["faces_described"],
        "ours_frames_skipped_by_gate": ours.stats["frames_skipped"],
        "first_decision_ms": latency[0]["live_ms"] if latency else None,
        "first_decision_ms_from_our_track": latency[0]["live_ms_from_our_track"] if latency else None,
        "first_decision_video_ms": latency[0]["video_ms"] if latency else None,
        "grant_latency": latency,
        "decision_latency_by_engine": by_engine,
        "live_frames_processed": live_frames,
        "live_wall_frames_processed": live_wall_frames,
        "idle_cpu_ms_per_frame": round(idle_ours, 3),
        "peer_idle_cpu_ms_per_frame": round(idle_peer, 2),
        "idle_frame": idle_source,
        "peak_rss_mb": round(rss_ours, 1),
        "peak_rss_with_peer_mb": round(peak_rss_mb(), 1),
    }
    if not args.skip_match:
        result["match_ms"] = {str(n): round(ms, 3) for n, ms in match_times().items()}
        result["peak_rss_with_match_mb"] = round(peak_rss_mb(), 1)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"speedup: {result['speedup']}x: {result['ours_fps']} vs {result['peer_fps']} frames/s, "
          f"{result['ours_cpu_ms_per_frame']} vs {result['peer_cpu_ms_per_frame']} ms CPU/frame "
          f"(wall clock on this machine: {result['ours_wall_fps']} vs {result['peer_wall_fps']} frames/s, "
          f"{result['wall_speedup']}x); descriptor engine {result['engine']}")
    print(f"same people granted: {result['same_decisions']} (ours {result['ours_granted']}, "
          f"peer {result['peer_granted']})")
    for row in latency:
        print(f"{row['person']}: visible at {row['visible_t']} s (peer's first sighting {row['peer_first_seen_t']}, "
              f"our detector's {row['our_track_start_t']}), granted at {row['granted_t']} s: "
              f"{row['video_ms']} ms of video ({row['video_ms_from_our_track']} from our first sighting); "
              f"live replay {row['live_ms']} ms ({row['live_ms_from_our_track']} from our first sighting; "
              f"{row['live_wall_ms']} ms on the wall clock)")
    for name, row in by_engine.items():
        print(f"engine {name}: first grant ({row['person']}) {row['grant_ms_from_our_track']} ms after our "
              f"first sighting, live replay, {row['frames_processed']} frames processed")
    print(f"static scene ({idle_source}): ours {result['idle_cpu_ms_per_frame']} ms CPU/frame, "
          f"peer {result['peer_idle_cpu_ms_per_frame']} ms")
    for n, ms in result.get("match_ms", {}).items():
        print(f"1:N match, N = {int(n):>9,}: {ms} ms")
    print(f"peak RSS: {result['peak_rss_mb']} MB (ours), {result['peak_rss_with_peer_mb']} MB with the peer, "
          f"{result.get('peak_rss_with_match_mb', '-')} MB with the 1:N timing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
