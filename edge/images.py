"""Reading images from disk into RGB numpy arrays, with clear errors."""

import os

import cv2
import numpy as np

from bytelocker import MAX_IMAGE_PIXELS
from bytelocker.errors import ImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm")


def load_rgb(path):
    """Return the image at ``path`` as an ``(h, w, 3)`` uint8 RGB array.

    Raises :class:`ImageError` for a missing, unreadable, corrupt or empty file.
    """
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ImageError(f"Cannot read image {path}: {exc.strerror or exc}.") from exc
    if data.size == 0:
        raise ImageError(f"Image {path} is empty.")
    try:
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error:
        # OpenCV refuses an image over OPENCV_IO_MAX_IMAGE_PIXELS before decoding it.
        raise ImageError(f"Image {path} is too large (over {MAX_IMAGE_PIXELS // 1_000_000} megapixels) "
                         "or corrupt; use a smaller photo.") from None
    if bgr is None:
        raise ImageError(f"Image {path} is corrupt or not an image format OpenCV can decode.")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def list_images(folder):
    """Return the image files directly in ``folder``, sorted by name."""
    return sorted(
        os.path.join(folder, name)
        for name in os.listdir(folder)
        if name.lower().endswith(IMAGE_SUFFIXES)
    )


def as_rgb(frame):
    """Return ``frame`` as a contiguous uint8 RGB array (grey frames are expanded)."""
    frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = np.repeat(frame[:, :, None], 3, axis=2)
    if frame.ndim != 3 or frame.shape[2] not in (3, 4):
        raise ImageError(f"Expected an RGB image, got an array of shape {frame.shape}.")
    if frame.shape[2] == 4:
        frame = frame[:, :, :3]
    if frame.dtype != np.uint8:
        frame = np.clip(frame, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(frame)
