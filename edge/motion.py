"""A cheap motion gate: skip face detection while the door's view is static.

Each frame is shrunk to a grey thumbnail about 64 pixels wide (well under a
millisecond) and compared with the thumbnail of the last frame that *was*
examined.  The score is the largest mean absolute grey-level change in any
cell of an 8x8-pixel grid over the thumbnail, so a face entering one corner
counts as much as a change spread over the whole picture, while sensor noise
averages out.  Comparing with the last examined frame rather than the
previous frame means a very slow approach still adds up to a change.

The loop asks the gate only when no face is being tracked; with an open track
it always detects (see :mod:`edge.pipeline`).
"""

import logging

import cv2
import numpy as np

logger = logging.getLogger(__name__)

THUMB_WIDTH = 64
CELL_PX = 8


def thumbnail(frame, width=THUMB_WIDTH):
    """Return a small grey float32 copy of an RGB ``frame``, ``width`` pixels wide."""
    height = max(CELL_PX, int(round(frame.shape[0] * width / float(frame.shape[1]))))
    # Take every step-th pixel first: area-averaging a 1080p frame costs ~2 ms,
    # a quarter-size copy of it well under one, and noise still averages out.
    step = max(1, frame.shape[1] // (width * 4))
    if step > 1:
        frame = np.ascontiguousarray(frame[::step, ::step])
    small = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
    if small.ndim == 3:
        small = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    return small.astype(np.float32)


def change_score(before, after):
    """Largest mean absolute grey-level change of any grid cell between two thumbnails."""
    diff = cv2.absdiff(before, after)
    rows, cols = diff.shape[0] // CELL_PX, diff.shape[1] // CELL_PX
    cells = diff[:rows * CELL_PX, :cols * CELL_PX].reshape(rows, CELL_PX, cols, CELL_PX)
    return float(cells.mean(axis=(1, 3)).max())


class MotionGate:
    """Say whether a frame differs enough from the last examined one to look for faces.

    :param threshold: grey levels (0-255); a frame whose :func:`change_score`
        against the last examined frame is below this is static.  0 turns the
        gate off (every frame is examined).  Lower catches subtler movement
        but lets sensor noise and flicker through.
    """

    def __init__(self, threshold=6.0):
        self.threshold = float(threshold)
        self._reference = None
        self.last_score = None

    def should_detect(self, frame, *, force=False):
        """Return True if ``frame`` must go through detection.

        ``force`` (an open track) always detects.  A frame that is examined
        becomes the new reference.
        """
        if self.threshold <= 0:
            return True
        thumb = thumbnail(frame)
        if self._reference is None or self._reference.shape != thumb.shape:
            self.last_score = None
            self._reference = thumb
            return True
        self.last_score = change_score(self._reference, thumb)
        if force or self.last_score >= self.threshold:
            self._reference = thumb
            return True
        return False

    def reset(self):
        """Forget the reference, so the next frame is examined."""
        self._reference = None
