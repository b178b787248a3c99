"""``bytelocker eval video``: run a recorded clip through the real door loop.

Staff record a clip at the door (or use one of ours), put one folder of
photos per person to enrol next to it, and see every decision the door would
have made, at the video time it would have made it.  The clip is read as
fast as the CPU allows, but every frame carries its own video timestamp, so
the decision times and "time to decide" are those of the scene, not of this
machine.
"""

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field

import cv2
from tqdm import tqdm

from bytelocker.errors import EnrolmentError, VideoError
from edge.images import list_images, load_rgb
from edge.match import Gallery

logger = logging.getLogger(__name__)

ENROL_MAX_SIDE = 800


def read_video(path):
    """Yield ``(frame_rgb, t_seconds)`` for every frame of the video file at ``path``.

    ``t`` is the frame's presentation time from the container when it has
    one, else frame index / frame rate.  Raises :class:`VideoError` for a
    missing file, one OpenCV cannot open, or one without a single frame.
    """
    if os.path.isdir(path):
        raise VideoError(f"{path} is a folder; give a video file.")
    if not os.path.isfile(path):
        raise VideoError(f"The video file {path} does not exist.")
    cap = cv2.VideoCapture(os.fspath(path))
    try:
        if not cap.isOpened():
            raise VideoError(f"The video file {path} cannot be opened: not a video format OpenCV can read.")
        fps = cap.get(cv2.CAP_PROP_FPS)
        fps = fps if fps and fps == fps and fps > 0 else 0.0
        index = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            pos_ms = cap.get(cv2.CAP_PROP_POS_MSEC)
            if fps:
                t = index / fps
            elif pos_ms and pos_ms > 0:
                t = pos_ms / 1000.0
            else:
                raise VideoError(f"The video file {path} has no frame rate or timestamps.")
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), t
            index += 1
        if index == 0:
            raise VideoError(f"The video file {path} opened but no frame could be decoded from it.")
    finally:
        cap.release()


def check_video(path):
    """Raise :class:`VideoError` unless at least one frame of ``path`` decodes."""
    frames = read_video(path)
    try:
        next(frames)
    finally:
        frames.close()


def video_info(path):
    """Return ``(frame_count, fps, width, height)`` as the container states them."""
    cap = cv2.VideoCapture(os.fspath(path))
    try:
        return (int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), float(cap.get(cv2.CAP_PROP_FPS)),
                int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    finally:
        cap.release()


def _shrink(image, max_side=ENROL_MAX_SIDE):
    scale = max_side / float(max(image.shape[:2]))
    if scale >= 1.0:
        return image
    return cv2.resize(image, (int(image.shape[1] * scale), int(image.shape[0] * scale)),
                      interpolation=cv2.INTER_AREA)


def enrol_photo_array(image, name, detector, describer):
    """Return the 128-d descriptor of the one face in the RGB ``image`` (called ``name`` in errors).

    Raises :class:`EnrolmentError` when the photo shows no face or more than one.
    """
    image = _shrink(image)
    boxes = detector.detect(image)
    if not boxes:
        raise EnrolmentError(f"Enrolment photo {name} shows no face the detector can find; "
                             "use a sharper, frontal photo.")
    if len(boxes) > 1:
        raise EnrolmentError(f"Enrolment photo {name} shows {len(boxes)} faces; "
                             "crop it so only the person being enrolled is in it.")
    return describer.describe(image, boxes)[0]


def enrol_photo(path, detector, describer):
    """Return the 128-d descriptor of the one face in the photo at ``path``.

    Raises :class:`EnrolmentError` naming the file when it shows no face or
    more than one (crop it to the one person), and
    :class:`~bytelocker.errors.ImageError` when it cannot be read.
    """
    return enrol_photo_array(load_rgb(path), path, detector, describer)


def enrol_folder(folder, describer, detector=None):
    """Build a :class:`~edge.match.Gallery` from ``folder/<person_id>/*`` photos.

    Every photo must show exactly one face.  The default detector is dlib's
    HOG with one upsampling pass, on photos shrunk to at most 800 pixels, so
    faces down to ~40 pixels are found.
    """
    if not os.path.isdir(folder):
        raise EnrolmentError(f"The enrolment folder {folder} does not exist.")
    if detector is None:
        from edge.detect import FaceDetector

        detector = FaceDetector(model="hog", scale=1.0, upsample=1, min_face_px=40)
    people = {}
    for person in sorted(os.listdir(folder)):
        person_dir = os.path.join(folder, person)
        if not os.path.isdir(person_dir):
            continue
        photos = list_images(person_dir)
        if not photos:
            raise EnrolmentError(f"The enrolment folder {person_dir} holds no photos.")
        people[person] = [enrol_photo(photo, detector, describer) for photo in photos]
    if not people:
        raise EnrolmentError(f"The enrolment folder {folder} has no <person_id>/ sub-folders of photos.")
    return Gallery.from_people(people)


@dataclass
class VideoRun:
    """The result of playing one clip through a loop.

    ``frame_ms[i]`` is the wall-clock cost of frame ``i``, ``frame_cpu_ms[i]``
    the CPU time this process spent on it, and ``frame_t[i]`` its video
    time; ``seconds`` the total wall-clock time.
    """

    path: str
    decisions: list = field(default_factory=list)
    frame_t: list = field(default_factory=list)
    frame_ms: list = field(default_factory=list)
    frame_cpu_ms: list = field(default_factory=list)
    seconds: float = 0.0
    stats: dict = field(default_factory=dict)

    @property
    def frames(self):
        return len(self.frame_t)

    @property
    def fps(self):
        """Frames processed per wall-clock second."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def granted(self):
        """The set of people granted in the clip."""
        return {d.person for d in self.decisions if d.decision == "granted"}


def run_video(path, loop, *, on_decision=None, progress=False):
    """Play the video at ``path`` through ``loop`` as fast as the CPU allows; return a :class:`VideoRun`."""
    run = VideoRun(path=os.fspath(path))
    total = video_info(path)[0] if progress else None
    frames = read_video(path)
    bar = tqdm(total=total or None, unit="frame", disable=None if progress else True, file=sys.stderr)
    started = time.perf_counter()
    try:
        for frame, t in frames:
            before, cpu_before = time.perf_counter(), time.process_time()
            decisions = loop.process(frame, t)
            run.frame_ms.append((time.perf_counter() - before) * 1000.0)
            run.frame_cpu_ms.append((time.process_time() - cpu_before) * 1000.0)
            run.frame_t.append(t)
            for decision in decisions:
                run.decisions.append(decision)
                if on_decision is not None:
                    on_decision(decision)
            bar.update(1)
    finally:
        bar.close()
    run.seconds = time.perf_counter() - started
    run.stats = loop.stats()
    return run


def decision_record(decision):
    """The JSON object ``eval video --json`` prints for one decision."""
    return {
        "t": round(decision.t, 3),
        "track": decision.track_id,
        "decision": decision.decision,
        "person": decision.person,
        "distance": round(decision.distance, 4) if decision.distance != float("inf") else None,
        "frames_used": decision.frames_used,
        "decide_ms": round(decision.decide_ms, 1),
    }


HEADER = f"{'t (s)':>8}  {'track':>5}  {'decision':<9}  {'person':<24}  {'distance':>8}  {'frames':>6}  {'decide ms':>9}"


def decision_line(decision):
    """One human-readable line per decision, under :data:`HEADER`."""
    distance = f"{decision.distance:8.3f}" if decision.distance != float("inf") else f"{'-':>8}"
    person = decision.person if decision.person is not None else "-"
    return (f"{decision.t:8.2f}  {decision.track_id:>5}  {decision.decision:<9}  {str(person):<24}  "
            f"{distance}  {decision.frames_used:>6}  {decision.decide_ms:>9.0f}")


def cmd_video(args):
    """``bytelocker eval video --video FILE --enroll DIR [--config door.yaml] [--json]``."""
    from config.loader import load_door_config
    from edge.pipeline import build_loop

    # FFmpeg's own complaints ("moov atom not found") would precede our
    # one-sentence error; keep them out unless the operator asked for them.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    config = load_door_config(getattr(args, "config", None))
    if getattr(args, "augment", None):
        # Evaluation only: a door's own config refuses anything but central's way.
        config.recognition = config.recognition.model_copy(update={"augment": args.augment})
    check_video(args.video)  # fail on a bad clip before spending time on enrolment
    loop = build_loop(config)
    gallery = enrol_folder(args.enroll, loop.describer)
    loop.set_gallery(gallery)
    out = sys.stdout
    if not args.json:
        count, fps, width, height = video_info(args.video)
        print(f"{args.video}: {count} frames, {width}x{height}, {fps:.2f} fps; "
              f"enrolled {len(gallery)} people ({gallery.size} photos) from {args.enroll}", file=out)
        engine = loop.describer.engine
        note = f" (fell back: {engine.fallback_reason})" if getattr(engine, "fallback_reason", None) else ""
        print(f"engine {getattr(engine, 'name', type(engine).__name__)}{note}; threshold {loop.threshold}, "
              f"margin {loop.margin}, "
              f"grant after {config.decision.votes_needed} of {config.decision.window_frames} frames", file=out)
        print(HEADER, file=out)
    on_decision = None if args.json else (lambda d: print(decision_line(d), file=out, flush=True))
    run = run_video(args.video, loop, on_decision=on_decision, progress=True)
    if args.json:
        json.dump([decision_record(d) for d in run.decisions], out, indent=2)
        out.write("\n")
        return 0
    stats = run.stats
    print(f"{run.frames} frames in {run.seconds:.1f} s ({run.fps:.1f} frames/s, "
          f"{stats['ms_per_frame']:.1f} ms/frame); motion gate skipped {stats['frames_skipped']}; "
          f"{stats['faces_described']} faces described; {len(run.decisions)} decisions; "
          f"granted: {', '.join(sorted(map(str, run.granted()))) or 'no one'}.", file=out)
    return 0
