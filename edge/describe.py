"""Face descriptors: ``FaceDescriber(...).describe(frame, boxes) -> ndarray[n, 128]``.

Each face is aligned with dlib's 5-point landmark model into a 150x150 chip
(``dlib.get_face_chip``, padding 0.25, exactly as dlib does internally), and
the chip goes through a descriptor *engine* that runs dlib's ResNet.  The
descriptor is the door's main cost (75-100 ms with the ``dlib-bin`` wheel),
so callers describe only faces whose decision is still open.

Descriptors are unit-scale float32 vectors; Euclidean distance between two of
them is ~0.3-0.5 for the same person and >0.6 for most different people.

``augment`` (``bytelocker eval ... --augment``; door.yaml's
``recognition.augment`` accepts only central's ``none``) optionally
describes more than the chip itself and averages: ``"mirror"`` adds the chip's left-right
mirror image (2x the describe cost).  On lfw-dev it lifts 10-fold pairs
accuracy from 98.73% to 98.90%; more copies (dlib-style jitter, rescaled or
rotated chips, 68-point alignment) measured 98.9-99.1%, within the noise of
the protocol, for 4-32x the cost, so they are not offered (docs/accuracy.md).
Enrolled and probe descriptors must be made with the same setting.
"""

import logging

import dlib
import numpy as np

from edge.images import as_rgb
from edge.models import model_paths

logger = logging.getLogger(__name__)

CHIP_SIZE = 150
CHIP_PADDING = 0.25

AUGMENTS = ("none", "mirror")
"""The values ``augment`` accepts: how many views of each chip are averaged."""

DEFAULT_AUGMENT = "none"
"""Central enrolment describes with this; config.recognition.RecognitionSection uses the same value."""


def augmented_views(chips, augment):
    """Return ``(views, per_chip)``: the chips to describe, ``per_chip`` consecutive views per chip.

    ``"none"`` is the chips themselves; ``"mirror"`` is each chip followed by
    its left-right mirror image.  Raises ``ValueError`` for another value.
    """
    if augment == "none":
        return list(chips), 1
    if augment == "mirror":
        # A face and its mirror image are the same person, so averaging the
        # two descriptors cancels part of what depends on one side of the
        # face (head turn, light from one side) rather than on who it is.
        return [view for chip in chips for view in (chip, np.ascontiguousarray(chip[:, ::-1]))], 2
    raise ValueError(f"unknown descriptor augmentation {augment!r}: use one of {', '.join(AUGMENTS)}")


class DlibEngine:
    """dlib's own ResNet (``dlib_face_recognition_resnet_model_v1.dat``)."""

    name = "dlib"

    def __init__(self, resnet_path):
        self._net = dlib.face_recognition_model_v1(resnet_path)

    def describe_chips(self, chips):
        """Return ``(n, 128)`` float32 descriptors of aligned 150x150 RGB chips."""
        if len(chips) == 0:
            return np.zeros((0, 128), np.float32)
        out = self._net.compute_face_descriptor([np.ascontiguousarray(c) for c in chips])
        return np.asarray([np.asarray(d) for d in out], dtype=np.float32).reshape(len(chips), 128)


class FaceDescriber:
    """Align faces and compute their 128-d descriptors.

    :param engine: an object with ``describe_chips(chips) -> ndarray[n,128]``;
        by default dlib's own ResNet.
    :param models_dir: folder of dlib ``.dat`` files; default is the installed
        ``face-recognition-models`` package.
    :param augment: ``"none"`` (default) or ``"mirror"`` (average with the
        mirrored chip; twice the describe cost, see :func:`augmented_views`).
        A gallery is only comparable with probes described the same way.
    """

    def __init__(self, *, engine=None, models_dir=None, augment=DEFAULT_AUGMENT):
        augmented_views([], augment)  # refuse an unknown value now, not at the first face
        self.augment = augment
        paths = model_paths(models_dir)
        self._landmarks = dlib.shape_predictor(paths.landmarks5)
        self.engine = engine if engine is not None else DlibEngine(paths.resnet)

    def landmarks(self, frame, box):
        """The 5-point landmarks of the face in ``box``."""
        return self._landmarks(frame, box.to_dlib())

    def chips(self, frame, boxes):
        """Return the aligned 150x150 RGB chips of ``boxes`` in ``frame``."""
        frame = as_rgb(frame)
        return [
            dlib.get_face_chip(frame, self.landmarks(frame, box), size=CHIP_SIZE, padding=CHIP_PADDING)
            for box in boxes
        ]

    def describe(self, frame, boxes):
        """Return an ``(len(boxes), 128)`` float32 array of descriptors.

        With ``augment`` other than ``"none"`` each face's descriptor is the
        mean of the descriptors of its views, not rescaled to unit length:
        rescaling changed lfw-dev accuracy by no more than the noise, and
        the door's thresholds are measured on unrescaled descriptors.
        """
        if not boxes:
            return np.zeros((0, 128), np.float32)
        views, per_chip = augmented_views(self.chips(frame, boxes), self.augment)
        described = np.asarray(self.engine.describe_chips(views), dtype=np.float32)
        if per_chip == 1:
            return described
        return described.reshape(len(boxes), per_chip, 128).mean(axis=1, dtype=np.float32)
