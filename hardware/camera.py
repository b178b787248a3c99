"""Camera sources for the door unit, behind one small interface.

``open_camera(section)`` returns a :class:`Camera` whose ``read()`` gives one
:class:`Frame` (RGB uint8 pixels, a timestamp in seconds and a running index).
The backend is picked by ``camera.kind`` in door.yaml, or guessed from
``camera.source`` when the kind is ``auto``:

=============  ==============================================  ====================
kind           source                                          timestamps
=============  ==============================================  ====================
``v4l2``       ``0``, ``/dev/video0``, ``/dev/v4l/by-id/...``  ``time.monotonic()``
``url``        ``rtsp://...``, ``http(s)://...`` (MJPEG)       ``time.monotonic()``
``file``       a video file OpenCV's FFmpeg can decode         video time
``folder``     a folder of images, played in name order        ``index / folder_fps``
``picamera2``  ``picamera2`` (Raspberry Pi camera module)      ``time.monotonic()``
=============  ==============================================  ====================

Live sources raise :class:`CameraUnavailable` when they cannot be opened or
stop delivering; files and folders raise :class:`EndOfStream` at their end
(unless ``loop``).  :class:`FrameGrabber` reads a camera in its own thread so
the door loop always works on the newest frame, and retries a lost camera with
exponential backoff instead of crashing.

Camera URLs may carry a password: :func:`redact` hides it, and every message
and log line here goes through it.
"""

import collections
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import cv2
import numpy as np

from bytelocker.errors import ByteLockerError, CameraUnavailable, EndOfStream, ImageError, VideoError
from edge.images import list_images, load_rgb

logger = logging.getLogger(__name__)

URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")

# Query parameters some cameras (Hikvision, Dahua, Reolink) take credentials in.
SECRET_QUERY_KEYS = {"password", "passwd", "pwd", "pass", "token", "key", "secret", "auth", "access_token"}

# States a FrameGrabber reports through ``on_state(state, detail)``.
OK, LOST, RETRYING, ENDED, STOPPED = "ok", "lost", "retrying", "ended", "stopped"
STALLED = "stalled"


# eq=False: frames are compared by identity; comparing pixel arrays with == is ambiguous.
@dataclass(frozen=True, eq=False)
class Frame:
    """One camera frame.

    :ivar rgb: ``(h, w, 3)`` uint8 RGB pixels.
    :ivar t: seconds; video time for files and folders (0 at the first frame),
        ``time.monotonic()`` at capture for live sources.
    :ivar index: 0 for the first frame this camera delivered, then +1 per frame.
    """

    rgb: np.ndarray = field(repr=False)
    t: float
    index: int

    @property
    def shape(self):
        return self.rgb.shape


# -- naming sources without leaking secrets ---------------------------------

def _secrets_in(source):
    """The password and secret query values in a URL ``source`` (may be empty)."""
    if not isinstance(source, str) or "://" not in source:
        return []
    try:
        parts = urlsplit(source)
        found = [parts.password] if parts.password else []
    except ValueError:
        # An unparsable URL: treat everything after the scheme as secret rather than risk a leak.
        return [source.split("://", 1)[1]]
    found += [v for k, v in parse_qsl(parts.query) if k.lower() in SECRET_QUERY_KEYS and v]
    return found


def redact(source):
    """Return ``source`` as text safe to log: URL passwords and secret query values become ``***``.

    ``rtsp://admin:hunter2@10.0.0.5/stream2`` -> ``rtsp://admin:***@10.0.0.5/stream2``.
    Anything that is not a URL is returned unchanged.
    """
    text = str(source)
    if "://" not in text:
        return text
    try:
        parts = urlsplit(text)
        netloc = parts.netloc
        if parts.password is not None:
            netloc = f"{parts.username}:***@{netloc.rsplit('@', 1)[1]}"
    except ValueError:
        return text.split("://", 1)[0] + "://***"
    query = "&".join(
        f"{item.split('=', 1)[0]}=***" if "=" in item and item.split("=", 1)[0].lower() in SECRET_QUERY_KEYS
        else item
        for item in parts.query.split("&")
    ) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def scrub(text, source):
    """Return ``text`` with every secret of the URL ``source`` replaced by ``***``.

    For messages from libraries that might quote the URL; a redacted URL
    already in ``text`` is left intact even if a short password occurs in it.
    """
    secrets = _secrets_in(source)
    if not secrets:
        return text
    safe = redact(source)
    pieces = text.replace(str(source), safe).split(safe)
    for secret in sorted(secrets, key=len, reverse=True):
        pieces = [piece.replace(secret, "***") for piece in pieces]
    return safe.join(pieces)


def guess_kind(source):
    """Guess the camera kind of ``source`` the way ``kind: auto`` does.

    A number or a ``/dev/`` path is ``v4l2``; ``scheme://...`` is ``url``;
    ``picamera2`` is ``picamera2``; an existing folder (or a path ending in
    ``/``) is ``folder``; anything else is taken to be a video ``file``.
    """
    if isinstance(source, int):
        return "v4l2"
    text = str(source).strip()
    if text.isdigit() or text.startswith("/dev/"):
        return "v4l2"
    if text.lower() == "picamera2":
        return "picamera2"
    if "://" in text and text.split("://", 1)[0].lower() in URL_SCHEMES:
        return "url"
    if os.path.isdir(text) or text.endswith(os.sep):
        return "folder"
    return "file"


def resolve_kind(section):
    """The kind ``section`` will open: ``section.kind``, or the guess when it is ``auto``."""
    return guess_kind(section.source) if section.kind == "auto" else section.kind


def describe_source(section):
    """A human, redacted description of the camera ``section`` names, e.g. ``V4L2 camera /dev/video0``."""
    kind = resolve_kind(section)
    return CAMERA_KINDS[kind].describe_source(section)


# -- the camera interface ---------------------------------------------------

_ROTATIONS = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}


def _bgr_to_rgb(image):
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class Camera:
    """A source of frames.  Use :func:`open_camera` rather than the subclasses.

    ``read()`` returns the next :class:`Frame`; it raises :class:`EndOfStream`
    after the last frame of a file or folder (when not looping) and
    :class:`CameraUnavailable` when a live camera stops delivering or the
    camera has been closed.  ``close()`` is idempotent and may be called from
    another thread.  A camera is also a context manager and an iterator of
    frames (iteration ends at :class:`EndOfStream`).
    """

    kind = "?"
    #: True for sources that run on their own clock (a real camera).
    live = True

    def __init__(self, section, *, stop=None):
        self.section = section
        # Pacing and other waits use this event, so setting the caller's stop
        # event (or closing the camera) interrupts them at once.
        self._interrupt = stop if stop is not None else threading.Event()
        self._own_interrupt = stop is None
        self._closed = False
        self._lock = threading.Lock()
        self._index = 0
        self._pacer = _Pacer(self._interrupt)
        #: ``time.monotonic()`` when the current grab began, None between grabs:
        #: how a driver hung inside ``read()`` is seen from another thread.
        self.grabbing_since = None
        self._open()

    @classmethod
    def describe_source(cls, section):
        return f"{cls.kind} camera {redact(section.source)}"

    @classmethod
    def check_backend(cls, section):
        """Raise :class:`CameraUnavailable` if the library this kind needs is not installed."""

    def describe(self):
        """A human description of this camera's source, with any password hidden."""
        return self.describe_source(self.section)

    def read(self):
        """Return the next :class:`Frame`; see the class docstring for the errors."""
        with self._lock:
            if self._closed or self._interrupt.is_set():
                raise CameraUnavailable(f"Camera {self.describe()} is closed.")
            self.grabbing_since = time.monotonic()
            try:
                rgb, t = self._grab()
            finally:
                self.grabbing_since = None
        if not self.live and self.section.realtime:
            # Outside the lock, so close() from another thread need not wait for it.
            if not self._pacer.wait_until(t):
                raise CameraUnavailable(f"Camera {self.describe()} was closed while waiting for its next frame.")
        if self.section.rotate:
            rgb = cv2.rotate(rgb, _ROTATIONS[self.section.rotate])
        frame = Frame(np.ascontiguousarray(rgb), float(t), self._index)
        self._index += 1
        return frame

    def close(self):
        """Release the device or file.  Safe to call twice and from another thread."""
        if self._own_interrupt:
            self._interrupt.set()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._release()
            except Exception as exc:  # noqa: BLE001 - a failing driver must not stop shutdown
                logger.warning("Closing camera %s failed: %s", self.describe(), scrub(str(exc), self.section.source))

    @property
    def closed(self):
        return self._closed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __iter__(self):
        while True:
            try:
                yield self.read()
            except EndOfStream:
                return

    def __repr__(self):
        return f"<{type(self).__name__} {self.describe()}>"

    # Backends implement these three.
    def _open(self):
        raise NotImplementedError

    def _grab(self):
        """Return ``(rgb, t)`` for the next frame, or raise."""
        raise NotImplementedError

    def _release(self):
        raise NotImplementedError

    def _fail(self, text, cls=CameraUnavailable):
        """An error of type ``cls`` whose message has the source's secrets scrubbed."""
        return cls(scrub(text, self.section.source))


class _Pacer:
    """Hands out recorded frames no faster than their own timestamps (``realtime``)."""

    # If the reader falls this far behind the recording, it starts afresh from
    # now instead of rushing through the backlog.
    MAX_LAG_SECONDS = 1.0

    def __init__(self, interrupt):
        self.interrupt = interrupt
        self.origin = None

    def wait_until(self, t):
        """Wait until recording time ``t`` is due; False if interrupted meanwhile."""
        now = time.monotonic()
        if self.origin is None or now - (self.origin + t) > self.MAX_LAG_SECONDS:
            self.origin = now - t
            return True
        delay = self.origin + t - now
        return not (delay > 0 and self.interrupt.wait(delay))


CAMERA_KINDS = {}


def register_kind(cls):
    """Class decorator: make ``cls`` selectable as ``camera.kind: <cls.kind>``."""
    CAMERA_KINDS[cls.kind] = cls
    return cls


@register_kind
class V4L2Camera(Camera):
    """A USB or CSI camera through Video4Linux2 (``/dev/videoN``)."""

    kind = "v4l2"

    @classmethod
    def describe_source(cls, section):
        return f"V4L2 camera {section.source}"

    def _device(self):
        source = self.section.source
        if isinstance(source, str) and source.strip().isdigit():
            return int(source)
        return source

    def _open(self):
        device = self._device()
        path = f"/dev/video{device}" if isinstance(device, int) else device
        if not os.path.exists(path):
            raise self._fail(
                f"Camera {self.describe()} cannot be opened: {path} does not exist. Is the camera plugged in? "
                "'v4l2-ctl --list-devices' lists the cameras this machine sees."
            )
        if not os.access(path, os.R_OK | os.W_OK):
            raise self._fail(
                f"Camera {self.describe()} cannot be opened: no permission to use {path}. Add the service user "
                "to the 'video' group (sudo usermod -aG video <user>) and restart the service."
            )
        self._cap = cv2.VideoCapture(device, cv2.CAP_V4L2)
        if not self._cap.isOpened():
            self._cap.release()
            raise self._fail(
                f"Camera {self.describe()} cannot be opened: {path} exists but is not a video capture device "
                "or is busy (another program may be using it)."
            )
        s = self.section
        if s.fourcc:
            self._cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*s.fourcc))
        if s.width:
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, s.width)
        if s.height:
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, s.height)
        # One buffer: the driver keeps the newest frame instead of a queue of old ones.
        self._cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        logger.info("Opened %s at %dx%d.", self.describe(),
                    int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))

    def _grab(self):
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            raise self._fail(f"Camera {self.describe()} stopped delivering frames (unplugged or driver error).")
        return _bgr_to_rgb(bgr), time.monotonic()

    def _release(self):
        self._cap.release()


@register_kind
class UrlCamera(Camera):
    """A network camera: RTSP, or HTTP(S) MJPEG/video, read with OpenCV's FFmpeg."""

    kind = "url"

    @classmethod
    def describe_source(cls, section):
        return f"network camera {redact(section.source)}"

    def _open(self):
        s = self.section
        url = str(s.source).strip()
        if url.lower().startswith(("rtsp://", "rtsps://")):
            # OpenCV's documented way to pass FFmpeg demuxer options.
            os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = f"rtsp_transport;{s.rtsp_transport}"
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(s.open_timeout_seconds * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(s.read_timeout_seconds * 1000),
        ]
        self._cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
        if not self._cap.isOpened():
            self._cap.release()
            raise self._fail(
                f"Camera {self.describe()} cannot be opened: it refused, did not answer within "
                f"{s.open_timeout_seconds:g} s, or sent no video. Check the address, port, path, user name "
                "and password, and that the camera is on the network."
            )
        logger.info("Opened %s at %dx%d.", self.describe(),
                    int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))

    def _grab(self):
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            raise self._fail(
                f"Camera {self.describe()} stopped delivering frames (stream closed or nothing for "
                f"{self.section.read_timeout_seconds:g} s)."
            )
        return _bgr_to_rgb(bgr), time.monotonic()

    def _release(self):
        self._cap.release()


@register_kind
class VideoFileCamera(Camera):
    """A recorded video file, played at its own frame rate (``realtime``) or as fast as it decodes.

    Timestamps are the video's own presentation times, continuing to grow
    across loops, so a clip gives the same ``t`` values on every machine.
    """

    kind = "file"
    live = False

    @classmethod
    def describe_source(cls, section):
        return f"video file {section.source}"

    def _open(self):
        path = os.fspath(self.section.source)
        if not os.path.isfile(path):
            raise self._fail(f"Camera {self.describe()} cannot be opened: the file does not exist.")
        self._offset = 0.0
        self._last_t = None
        self._open_capture()

    def _open_capture(self):
        path = os.fspath(self.section.source)
        self._cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
        if not self._cap.isOpened():
            self._cap.release()
            raise self._fail(
                f"Camera {self.describe()} cannot be opened: it is not a video OpenCV's FFmpeg can decode "
                "(corrupt, truncated or not a video).",
                VideoError,
            )
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and 0 < fps < 1000 else 25.0
        self.frame_count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self._in_pass = 0

    def _grab(self):
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            if self.frame_count and self._in_pass < self.frame_count - 1:
                logger.warning("Camera %s ended after %d of %d frames; the file may be truncated.",
                               self.describe(), self._in_pass, self.frame_count)
            if not self.section.loop or self._in_pass == 0:
                raise EndOfStream(f"Camera {self.describe()} reached the end of the video.")
            self._offset = (self._last_t or 0.0) + 1.0 / self.fps
            self._cap.release()
            self._open_capture()
            ok, bgr = self._cap.read()
            if not ok or bgr is None:
                raise self._fail(f"Camera {self.describe()} could not restart the video.", VideoError)
        t = self._offset + self._video_time()
        self._in_pass += 1
        self._last_t = t
        return _bgr_to_rgb(bgr), t

    def _video_time(self):
        # POS_MSEC is the timestamp of the frame just read; some containers
        # report nothing useful, so fall back to the frame number.
        pts = self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        by_count = self._in_pass / self.fps
        if self._in_pass > 0 and (self._last_t is None or self._offset + pts <= self._last_t):
            return by_count
        return pts

    def _release(self):
        self._cap.release()


@register_kind
class FolderCamera(Camera):
    """A folder of images played in name order at ``folder_fps``; corrupt images are skipped with a warning."""

    kind = "folder"
    live = False

    @classmethod
    def describe_source(cls, section):
        return f"image folder {section.source}"

    def _open(self):
        self._folder = os.fspath(self.section.source)
        if not os.path.isdir(self._folder):
            raise self._fail(f"Camera {self.describe()} cannot be opened: the folder does not exist.")
        self._files = self._list()
        self._pos = 0
        self._delivered_this_pass = 0

    def _list(self):
        try:
            files = list_images(self._folder)
        except OSError as exc:
            raise self._fail(f"Camera {self.describe()} cannot list its folder: {exc.strerror or exc}.") from exc
        if not files:
            raise self._fail(f"Camera {self.describe()} has no images (.jpg, .png, ...) in its folder.")
        return files

    def _grab(self):
        while True:
            if self._pos >= len(self._files):
                if not self.section.loop:
                    raise EndOfStream(f"Camera {self.describe()} showed the last image of its folder.")
                if self._delivered_this_pass == 0:
                    raise self._fail(f"Camera {self.describe()} has no readable images in its folder.", VideoError)
                # Listed again on every pass, so images added meanwhile are played too.
                self._files = self._list()
                self._pos = 0
                self._delivered_this_pass = 0
            path = self._files[self._pos]
            self._pos += 1
            try:
                rgb = load_rgb(path)
            except ImageError as exc:
                logger.warning("Camera %s skipped %s: %s", self.describe(), path, exc)
                continue
            self._delivered_this_pass += 1
            return rgb, self._index / self.section.folder_fps

    def _release(self):
        self._files = []


@register_kind
class Picamera2Camera(Camera):
    """The Raspberry Pi camera module through Picamera2 (libcamera).

    ``picamera2`` is imported only when this camera opens.  It is a Raspberry
    Pi OS package (``python3-picamera2``), not a pip wheel, so the venv must be
    made with ``--system-site-packages``.  ``source`` may be a camera number
    when the Pi has two camera ports.
    """

    kind = "picamera2"

    @classmethod
    def describe_source(cls, section):
        number = section.source if isinstance(section.source, int) else 0
        return f"Raspberry Pi camera {number} (Picamera2)"

    @classmethod
    def check_backend(cls, section):
        cls._import(section)

    @classmethod
    def _import(cls, section):
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise CameraUnavailable(
                f"Camera {cls.describe_source(section)} cannot be opened: the picamera2 package is not installed. "
                "Install python3-picamera2 from Raspberry Pi OS (sudo apt install python3-picamera2) and make "
                "the venv with 'python3 -m venv --system-site-packages'."
            ) from exc
        return Picamera2

    def _open(self):
        Picamera2 = self._import(self.section)
        s = self.section
        number = s.source if isinstance(s.source, int) else 0
        size = (s.width or 640, s.height or 480)
        try:
            self._cam = Picamera2(number)
            # libcamera's "RGB888" is B,G,R in memory, i.e. what OpenCV calls BGR.
            config = self._cam.create_video_configuration(main={"size": size, "format": "RGB888"})
            self._cam.configure(config)
            self._cam.start()
        except Exception as exc:  # noqa: BLE001 - libcamera raises plain RuntimeError/IndexError
            self._cam = None
            raise self._fail(f"Camera {self.describe()} cannot be opened: {exc}.") from exc

    def _grab(self):
        try:
            bgr = self._cam.capture_array("main")
        except Exception as exc:  # noqa: BLE001 - see _open
            raise self._fail(f"Camera {self.describe()} stopped delivering frames: {exc}.") from exc
        return _bgr_to_rgb(bgr), time.monotonic()

    def _release(self):
        if self._cam is not None:
            self._cam.stop()
            self._cam.close()


def check_backend(section):
    """Raise :class:`CameraUnavailable` if the library the camera ``section`` needs is missing.

    Call it at start-up: a missing package is an installation fault the door
    should exit on, whereas a camera that cannot be opened yet is retried by
    :class:`FrameGrabber`.  It does not open the camera.
    """
    CAMERA_KINDS[resolve_kind(section)].check_backend(section)


def open_camera(section, *, stop=None):
    """Open the camera ``section`` (a :class:`config.camera.CameraSection`) names.

    :param stop: an event that, once set, interrupts pacing waits and makes
        ``read()`` raise :class:`CameraUnavailable`; the door passes its stop event.
    :raises CameraUnavailable: the device, URL, file or folder cannot be opened.
    :raises VideoError: the file exists but is not a video that can be decoded.
    """
    kind = resolve_kind(section)
    try:
        cls = CAMERA_KINDS[kind]
    except KeyError:
        raise CameraUnavailable(f"Camera kind {kind!r} is not known; use one of {', '.join(CAMERA_KINDS)}.") from None
    return cls(section, stop=stop)


# -- reading in a thread ----------------------------------------------------

class FrameGrabber(threading.Thread):
    """Reads the camera in a thread named ``camera`` and hands frames to the door loop.

    By default only the newest frame is kept: if the loop is slower than the
    camera, older frames are dropped (counted in :attr:`dropped`) so decisions
    are never made on stale pictures.  With ``keep_all=True`` every frame is
    handed over through a queue of ``queue_size`` frames and the reader waits
    when it is full (for evaluating a clip frame by frame).

    A camera that cannot be opened or stops delivering is reopened after
    ``retry_initial_seconds``, doubling up to ``retry_max_seconds``, forever,
    until ``stop_event`` is set.  Waits are on ``stop_event``, so stopping is
    immediate.  Each change is reported through ``on_state(state, detail)``:

    - ``ok``: frames are arriving (detail: the source);
    - ``lost``: opening or reading failed after frames were arriving, or the
      first open failed (detail: the reason); reported once per outage;
    - ``retrying``: waiting before the next attempt (detail: the last error,
      the wait and the attempt number); reported before every attempt;
    - ``stalled``: the camera has been inside one grab for
      ``read_timeout_seconds`` without a frame (a hung driver; waits that
      pace a file or folder do not count); reported by
      :meth:`check_stall`, which another thread calls because this one is
      the one stuck.  If the read ever returns, the camera is reopened;
    - ``ended``: a file or folder ended (not looping); the thread finishes;
    - ``stopped``: ``stop_event`` was set; the thread finishes.

    ``on_state`` runs in the camera thread (``stalled``: the caller of
    :meth:`check_stall`), so it should return quickly.  Nothing the camera or
    ``on_state`` raises ever escapes the thread.
    """

    def __init__(self, section, stop_event, *, on_state=None, keep_all=False, queue_size=8):
        super().__init__(name="camera", daemon=True)
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self.section = section
        self.stop_event = stop_event
        self.on_state = on_state
        self.keep_all = keep_all
        self.queue_size = queue_size
        self.state = None
        self.detail = ""
        self.dropped = 0
        self.frames = 0
        self.attempts = 0
        self._buffer = collections.deque()
        self._cond = threading.Condition()
        self._finished = False
        self._camera = None
        self._state_lock = threading.RLock()

    def describe(self):
        """The camera source, with any password hidden."""
        return describe_source(self.section)

    def latest(self, timeout=None):
        """Return the newest frame not yet returned, waiting up to ``timeout`` seconds (None: forever).

        Returns None if no new frame came in time.  It waits out the timeout
        even after a file has ended, so a loop calling it never spins; check
        :attr:`state` or :attr:`finished`, or iterate over the grabber instead.
        With ``keep_all`` the frames come in order, none skipped.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self._buffer, timeout):
                return None
            frame = self._buffer.popleft()
            self._cond.notify_all()
            return frame

    def __iter__(self):
        """Yield frames until the grabber has finished and every frame was taken.

        Meant for ``keep_all`` evaluation of a file or folder: ``for frame in grabber``.
        """
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._buffer or self._finished)
                if not self._buffer:
                    return
                frame = self._buffer.popleft()
                self._cond.notify_all()
            yield frame

    @property
    def finished(self):
        """True once the thread has ended (file over, or stopped)."""
        return self._finished

    def stalled_for(self):
        """Seconds the camera has been inside one grab (see :attr:`Camera.grabbing_since`); 0 between grabs.

        The pacing waits of a ``realtime`` file or folder are not grabs, so they never count.
        """
        camera = self._camera
        since = None if camera is None else camera.grabbing_since
        return 0.0 if since is None else max(0.0, time.monotonic() - since)

    def check_stall(self):
        """Report ``stalled`` once the camera gave no frame for ``read_timeout_seconds``; return the seconds.

        Call it from another thread (the door's status loop): a driver hung
        inside ``read()`` holds this one.
        """
        stalled = self.stalled_for()
        if stalled >= self.section.read_timeout_seconds:
            with self._state_lock:
                if self.state == OK:
                    self._report(STALLED, f"Camera {self.describe()} has given no frame for {stalled:.0f} s "
                                          "(its driver is not returning); it is reopened if the driver returns.")
        return stalled

    def run(self):
        try:
            self._run()
        finally:
            with self._cond:
                self._finished = True
                self._cond.notify_all()

    def _run(self):
        delay = self.section.retry_initial_seconds
        while not self.stop_event.is_set():
            camera = None
            try:
                camera = self._camera = open_camera(self.section, stop=self.stop_event)
                while not self.stop_event.is_set():
                    frame = camera.read()
                    if self.state == STALLED:
                        # The driver came back after hanging: start afresh rather than trust it.
                        raise CameraUnavailable(f"Camera {self.describe()} stalled; reopening it.")
                    if self.state != OK:
                        self._report(OK, camera.describe())
                        delay = self.section.retry_initial_seconds
                        self.attempts = 0
                    self._hand_over(frame)
                break
            except EndOfStream as exc:
                self._report(ENDED, str(exc))
                return
            except Exception as exc:  # noqa: BLE001 - a camera failure of any kind must not kill the door
                if self.stop_event.is_set():
                    break
                if isinstance(exc, ByteLockerError):
                    reason = str(exc)
                else:
                    # No traceback in the log: its text could quote the URL and its password.
                    reason = f"Camera {self.describe()} failed: {type(exc).__name__}: {exc}"
                reason = scrub(reason, self.section.source)
                if self.state not in (LOST, RETRYING):
                    self._report(LOST, reason)
            finally:
                if camera is not None:
                    camera.close()
            self.attempts += 1
            self._report(RETRYING, f"{reason} Reopening in {delay:g} s (attempt {self.attempts}).")
            if self.stop_event.wait(delay):
                break
            delay = min(delay * 2, self.section.retry_max_seconds)
        self._report(STOPPED, f"Camera {self.describe()} stopped.")

    def _hand_over(self, frame):
        self.frames += 1
        with self._cond:
            if self.keep_all:
                # Back-pressure: wait for the consumer, but notice a stop promptly.
                while len(self._buffer) >= self.queue_size and not self.stop_event.is_set():
                    self._cond.wait(0.2)
            elif self._buffer:
                self.dropped += len(self._buffer)
                self._buffer.clear()
            self._buffer.append(frame)
            self._cond.notify_all()

    def _report(self, state, detail):
        with self._state_lock:
            self._report_locked(state, detail)

    def _report_locked(self, state, detail):
        if state == self.state and detail == self.detail:
            return
        previous = self.state
        self.state, self.detail = state, detail
        if state in (LOST, STALLED):
            logger.warning("%s", detail)
        elif state == OK and previous in (LOST, RETRYING, STALLED):
            logger.warning("Camera %s is delivering frames again.", detail)
        elif state == OK:
            logger.info("Camera %s is delivering frames.", detail)
        else:
            logger.info("%s", detail)
        if self.on_state is None:
            return
        try:
            self.on_state(state, detail)
        except Exception:  # noqa: BLE001 - a broken listener must not stop the camera
            logger.exception("The camera state listener failed on %r.", state)
