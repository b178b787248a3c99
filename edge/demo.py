"""``bytelocker demo``: the recognition loop on this machine, no camera, no config.

Two people are enrolled from sample photos that ship with scikit-image and
matplotlib (astronaut Eileen Collins and Grace Hopper).  A short door scene
is then played through the real :class:`~edge.pipeline.RecognitionLoop`: a
blank wall, each enrolled person walking up to the camera, and a stranger (a
face from scikit-image's small LFW sample, enrolled by no one).  Decisions
are printed as they are made, in scene time.

The pieces are kept separate so the demo can grow: :func:`sample_people`
(photos), :func:`demo_scene` (frames), :func:`run_demo` (the loop driver,
with an ``on_decision`` callback).
"""

import logging
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from bytelocker.errors import EnrolmentError
from edge.match import Gallery

logger = logging.getLogger(__name__)

FRAME_SIZE = (640, 480)
DEMO_FPS = 15.0
WALL_RGB = (196, 190, 178)
NOISE_SIGMA = 2.0
FACE_START_PX = 95
FACE_END_PX = 135
# scikit-image's lfw_subset.npy: the first 100 images are faces; this one is
# found by the detector once enlarged and is far from both sample people.
STRANGER_LFW_INDEX = 1


@dataclass
class SamplePerson:
    """A photo of one person for the demo scene; ``person_id`` is None for the stranger."""

    person_id: object
    photo: np.ndarray
    label: str


def _missing(package, pip_name):
    return EnrolmentError(
        f"The demo's sample faces come from the {package} package, which is not installed: "
        f"pip install {pip_name} (or make venv)."
    )


def sample_people():
    """Return the two enrolled sample people and the stranger, as :class:`SamplePerson`.

    Raises :class:`~bytelocker.errors.EnrolmentError` naming the package to
    install if scikit-image or matplotlib is missing.
    """
    try:
        from skimage import data as skdata
    except ImportError:
        raise _missing("scikit-image", "scikit-image") from None
    try:
        import matplotlib.cbook
    except ImportError:
        raise _missing("matplotlib", "matplotlib") from None
    from edge.images import load_rgb

    # Head and shoulders only: the full astronaut photo has a patch that HOG
    # takes for a second face.
    astronaut = np.ascontiguousarray(skdata.astronaut()[0:300, 90:350])
    hopper = load_rgb(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    grey = (skdata.lfw_subset()[STRANGER_LFW_INDEX] * 255).astype(np.uint8)
    grey = cv2.resize(grey, (180, 180), interpolation=cv2.INTER_CUBIC)
    grey = cv2.copyMakeBorder(grey, 50, 50, 50, 50, cv2.BORDER_REPLICATE)
    stranger = np.repeat(grey[:, :, None], 3, axis=2)
    return [
        SamplePerson("eileen_collins", astronaut, "Eileen Collins (enrolled)"),
        SamplePerson("grace_hopper", hopper, "Grace Hopper (enrolled)"),
        SamplePerson(None, stranger, "a stranger (not enrolled)"),
    ]


def enrolment_detector():
    """The detector used on the sample photos: HOG with one upsampling pass."""
    from edge.detect import FaceDetector

    return FaceDetector(model="hog", scale=1.0, upsample=1, min_face_px=40)


def enrol_samples(people, detector, describer):
    """Return the gallery of the enrolled sample people (the stranger is skipped)."""
    from edge.video_eval import enrol_photo_array

    by_person = {}
    for sample in people:
        if sample.person_id is not None:
            by_person[sample.person_id] = [enrol_photo_array(sample.photo, sample.label, detector, describer)]
    return Gallery.from_people(by_person)


def _wall(size):
    width, height = size
    shade = np.linspace(1.04, 0.92, height, dtype=np.float32)[:, None, None]
    wall = np.broadcast_to(np.asarray(WALL_RGB, np.float32), (height, width, 3)) * shade
    # A door frame, so the picture reads as a door camera's view.
    cv2.rectangle(wall, (width // 2 - 170, 40), (width // 2 + 170, height + 10), (120, 96, 70), 14)
    return wall


@dataclass
class SceneSegment:
    """Who is in view from ``start`` to ``end`` seconds (``sample`` None: the bare wall)."""

    start: float
    end: float
    sample: object = None


def scene_plan(people, *, wall_seconds=1.0, person_seconds=1.8):
    """The demo's timeline: wall, then each person separated by the wall."""
    plan, t = [], 0.0
    for sample in people:
        plan.append(SceneSegment(t, t + wall_seconds))
        t += wall_seconds
        plan.append(SceneSegment(t, t + person_seconds, sample))
        t += person_seconds
    plan.append(SceneSegment(t, t + wall_seconds * 0.6))
    return plan


def _face_width(photo, detector):
    boxes = detector.detect(photo)
    if not boxes:
        raise EnrolmentError("A demo sample photo shows no face the detector can find.")
    return boxes[0].width


def demo_scene(people, detector, *, fps=DEMO_FPS, size=FRAME_SIZE, seed=0, plan=None):
    """Yield ``(frame_rgb, t_seconds)`` of a door scene built from the sample photos.

    Each person slides in from the right while coming closer (their face grows
    from ~95 to ~135 px) for the first half of their segment, then stands
    still in front of the camera.  Every frame carries a little sensor noise,
    as a real camera's would.
    """
    plan = plan or scene_plan(people)
    width, height = size
    wall = _wall(size)
    rng = np.random.default_rng(seed)
    widths = {id(s): _face_width(s.photo, detector) for s in people}
    n_frames = int(round(plan[-1].end * fps))
    for index in range(n_frames):
        t = index / fps
        frame = wall.copy()
        segment = next((s for s in plan if s.start <= t < s.end), plan[-1])
        if segment.sample is not None:
            progress = min(1.0, (t - segment.start) / (0.5 * (segment.end - segment.start)))
            face_px = FACE_START_PX + (FACE_END_PX - FACE_START_PX) * progress
            scale = face_px / widths[id(segment.sample)]
            photo = segment.sample.photo
            pw, ph = max(1, int(photo.shape[1] * scale)), max(1, int(photo.shape[0] * scale))
            photo = cv2.resize(photo, (pw, ph), interpolation=cv2.INTER_AREA)
            centre_x = width - (width // 2) * progress + pw // 2 * (1 - progress)
            left = int(centre_x - pw / 2)
            top = max(0, (height - ph) // 3)
            x0, x1 = max(0, left), min(width, left + pw)
            y1 = min(height, top + ph)
            if x1 > x0:
                frame[top:y1, x0:x1] = photo[:y1 - top, x0 - left:x1 - left]
        frame += rng.normal(0.0, NOISE_SIGMA, frame.shape).astype(np.float32)
        yield np.clip(frame, 0, 255).astype(np.uint8), t


@dataclass
class DemoRun:
    """What the demo saw: decisions, the loop's counters and the wall-clock cost."""

    decisions: list = field(default_factory=list)
    plan: list = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    frames: int = 0
    seconds: float = 0.0

    def granted(self):
        return {d.person for d in self.decisions if d.decision == "granted"}


def run_demo(*, loop=None, on_decision=None, fps=DEMO_FPS):
    """Enrol the sample people and play the demo scene through a recognition loop.

    :param loop: a :class:`~edge.pipeline.RecognitionLoop`; default: one
        built from the default door.yaml settings.  Its gallery is replaced
        by the sample people.
    :param on_decision: called with each :class:`~edge.pipeline.Decision` as
        it is made (the place to drive a relay or publish an event).
    """
    if loop is None:
        from config.door import DoorConfig
        from edge.pipeline import build_loop

        loop = build_loop(DoorConfig())
    people = sample_people()
    detector = enrolment_detector()
    loop.set_gallery(enrol_samples(people, detector, loop.describer))
    run = DemoRun(plan=scene_plan(people))
    started = time.perf_counter()
    for frame, t in demo_scene(people, detector, fps=fps, plan=run.plan):
        run.frames += 1
        for decision in loop.process(frame, t):
            run.decisions.append(decision)
            if on_decision is not None:
                on_decision(decision)
    run.seconds = time.perf_counter() - started
    run.stats = loop.stats()
    return run


def cmd_demo(args):
    """``bytelocker demo``: enrol two sample people and play a door scene through the loop."""
    people = sample_people()
    print("ByteLocker demo: enrolling Eileen Collins and Grace Hopper from sample photos.")
    print("Scene (seconds):")
    for segment in scene_plan(people):
        who = segment.sample.label if segment.sample is not None else "the bare wall"
        print(f"  {segment.start:4.1f} - {segment.end:4.1f}  {who}")
    print(f"{'t (s)':>6}  {'decision':<9}  {'person':<16}  {'distance':>8}  {'time to decide':>14}")

    def show(decision):
        person = decision.person if decision.person is not None else "-"
        print(f"{decision.t:6.2f}  {decision.decision:<9}  {str(person):<16}  {decision.distance:8.3f}  "
              f"{decision.decide_ms:11.0f} ms  ({decision.frames_used} frames)", flush=True)

    run = run_demo(on_decision=show)
    stats = run.stats
    print(f"{run.frames} frames in {run.seconds:.1f} s ({stats['ms_per_frame']:.1f} ms/frame); "
          f"the motion gate skipped {stats['frames_skipped']} frames of bare wall; "
          f"{stats['faces_described']} faces described.")
    print(f"Granted: {', '.join(sorted(map(str, run.granted()))) or 'no one'}.")
    return 0
