"""Face detection: ``FaceDetector(...).detect(frame) -> list[Box]``.

dlib's HOG frontal face detector is the default; it costs about 6 ms on a
320x240 frame and 23 ms on 640x480 on a 2-core x86 box.  dlib's CNN (mmod)
detector finds smaller and turned faces but costs ~1.9 s per 640x480 frame, so
it is meant for enrolment photos, not the live loop.

Detection runs on a downscaled copy of the frame (``scale``) and boxes are
mapped back to full resolution.  Faces narrower than ``min_face_px`` (measured
at full resolution) are dropped: too small to recognise reliably, so we do not
guess.
"""

import logging
from dataclasses import dataclass

import cv2
import dlib

from edge.images import as_rgb
from edge.models import model_paths

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Box:
    """A face box in full-resolution pixel coordinates (exclusive right/bottom)."""

    left: int
    top: int
    right: int
    bottom: int
    score: float = 0.0

    @property
    def width(self):
        return self.right - self.left

    @property
    def height(self):
        return self.bottom - self.top

    @property
    def area(self):
        return max(0, self.width) * max(0, self.height)

    def iou(self, other):
        """Intersection over union with ``other``, 0..1."""
        w = min(self.right, other.right) - max(self.left, other.left)
        h = min(self.bottom, other.bottom) - max(self.top, other.top)
        if w <= 0 or h <= 0:
            return 0.0
        inter = w * h
        return inter / float(self.area + other.area - inter)

    def clipped(self, width, height):
        """This box clipped to a ``width`` x ``height`` frame."""
        return Box(max(0, self.left), max(0, self.top), min(width, self.right),
                   min(height, self.bottom), self.score)

    def to_dlib(self):
        return dlib.rectangle(int(self.left), int(self.top), int(self.right), int(self.bottom))


class FaceDetector:
    """Find faces in RGB frames.

    :param model: ``"hog"`` (fast, frontal) or ``"cnn"`` (slow, robust; enrolment).
    :param scale: factor applied to the frame before detection, 0.1..1.0.  0.5
        turns a 640x480 frame into 320x240 (about 4x cheaper with HOG).
    :param upsample: dlib upsampling passes on the scaled frame; each pass lets
        the detector find faces half the size at about 4x the cost.
    :param min_face_px: faces narrower than this at full resolution are ignored.
    :param models_dir: folder of dlib ``.dat`` files; default is the installed
        ``face-recognition-models`` package.
    """

    def __init__(self, *, model="hog", scale=1.0, upsample=0, min_face_px=40, models_dir=None):
        if model not in ("hog", "cnn"):
            raise ValueError(f"detector model must be 'hog' or 'cnn', not {model!r}")
        if not 0.05 <= scale <= 1.0:
            raise ValueError(f"detector scale must be between 0.05 and 1.0, not {scale}")
        self.model = model
        self.scale = float(scale)
        self.upsample = int(upsample)
        self.min_face_px = int(min_face_px)
        if model == "cnn":
            self._detector = dlib.cnn_face_detection_model_v1(model_paths(models_dir).cnn_detector)
        else:
            self._detector = dlib.get_frontal_face_detector()

    def detect(self, frame):
        """Return the faces in ``frame`` (RGB uint8 array) as full-resolution boxes.

        Boxes are sorted largest first.
        """
        frame = as_rgb(frame)
        height, width = frame.shape[:2]
        small = frame
        if self.scale != 1.0:
            small = cv2.resize(frame, (max(1, int(width * self.scale)), max(1, int(height * self.scale))),
                               interpolation=cv2.INTER_AREA)
        found = []
        if self.model == "cnn":
            for det in self._detector(small, self.upsample):
                found.append((det.rect, float(det.confidence)))
        else:
            rects, scores, _ = self._detector.run(small, self.upsample, 0.0)
            found = list(zip(rects, scores))
        inv = 1.0 / self.scale
        boxes = []
        for rect, score in found:
            box = Box(int(round(rect.left() * inv)), int(round(rect.top() * inv)),
                      int(round((rect.right() + 1) * inv)), int(round((rect.bottom() + 1) * inv)),
                      float(score)).clipped(width, height)
            if box.width < self.min_face_px or box.height <= 0:
                logger.debug("ignoring a face %d px wide (minimum %d)", box.width, self.min_face_px)
                continue
            boxes.append(box)
        boxes.sort(key=lambda b: b.area, reverse=True)
        return boxes
