"""ByteLocker: the open-source face-recognition door system.

The code is split by where it runs: ``edge`` (the door unit), ``central`` (the
collector and people registry), ``hardware`` (pins and cameras) and ``config``
(the YAML schema).  This package holds only what every part shares: the error
root, the MQTT contract and the ``bytelocker`` command line.
"""

import os

__version__ = "0.1.0"

MAX_IMAGE_PIXELS = 120_000_000
"""Largest image (width x height) any ByteLocker process decodes: a 108 MP phone photo fits."""

# OpenCV reads this once, when cv2 is first imported, and every entry point
# imports this package first.  Its own default (2**30 pixels) lets a 400 KB
# PNG claim 20000x20000 and take gigabytes to decode (a decompression bomb).
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))
