"""Face descriptors: ``FaceDescriber(...).describe(frame, boxes) -> ndarray[n, 128]``.

Each face is aligned with dlib's 5-point landmark model into a 150x150 chip
(``dlib.get_face_chip``, padding 0.25, exactly as dlib does internally), and
the chip goes through a descriptor *engine* that runs dlib's ResNet.  The
descriptor is the door's main cost (75-100 ms with the ``dlib-bin`` wheel),
so callers describe only faces whose decision is still open.

Descriptors are unit-scale float32 vectors; Euclidean distance between two of
them is ~0.3-0.5 for the same person and >0.6 for most different people.
"""

import logging

import dlib
import numpy as np

from edge.images import as_rgb
from edge.models import model_paths

logger = logging.getLogger(__name__)

CHIP_SIZE = 150
CHIP_PADDING = 0.25


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
    """

    def __init__(self, *, engine=None, models_dir=None):
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
        """Return an ``(len(boxes), 128)`` float32 array of descriptors."""
        if not boxes:
            return np.zeros((0, 128), np.float32)
        return self.engine.describe_chips(self.chips(frame, boxes))
