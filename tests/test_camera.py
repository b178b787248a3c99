"""Camera sources and the frame grabber, on real video, real photos and a real HTTP stream."""

import http.server
import logging
import threading
import time

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from bytelocker.errors import ByteLockerError, CameraUnavailable, EndOfStream, VideoError
from config.camera import CameraSection
from hardware.camera import Frame, FrameGrabber, check_backend, describe_source, guess_kind, open_camera, redact, scrub
from tests.brokers import free_port


def hamilton(shared_data):
    return str(shared_data / "video" / "hamilton.mp4")


def save_rgb(path, rgb):
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture
def photo_folder(tmp_path, astronaut, grace_hopper):
    """A folder of three real photos; PNG so the pixels come back exactly."""
    folder = tmp_path / "frames"
    folder.mkdir()
    save_rgb(folder / "001.png", astronaut)
    save_rgb(folder / "002.png", grace_hopper)
    save_rgb(folder / "003.png", astronaut[::-1].copy())
    return folder


class StateLog:
    """Records a grabber's ``on_state`` calls and lets a test wait for one."""

    def __init__(self):
        self.states = []
        self.cond = threading.Condition()

    def __call__(self, state, detail):
        with self.cond:
            self.states.append((state, detail))
            self.cond.notify_all()

    def names(self):
        with self.cond:
            return [s for s, _ in self.states]

    def wait_for(self, predicate, timeout=20.0):
        with self.cond:
            assert self.cond.wait_for(lambda: predicate([s for s, _ in self.states]), timeout), self.states


class MjpegServer:
    """A real HTTP MJPEG camera on 127.0.0.1 that can be stopped and started on the same port."""

    def __init__(self, rgb):
        self.jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
        self.port = free_port()
        self.server = None

    def start(self):
        jpeg = self.jpeg
        stopping = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                part = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                try:
                    while not stopping.wait(0.04):
                        self.wfile.write(part + jpeg + b"\r\n")
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.stopping = stopping
        threading.Thread(target=self.server.serve_forever, name="mjpeg-server", daemon=True).start()

    def stop(self):
        if self.server is not None:
            self.server.stopping.set()
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def url(self, userinfo=""):
        return f"http://{userinfo}127.0.0.1:{self.port}/stream.mjpg"


@pytest.fixture
def mjpeg_camera(astronaut):
    server = MjpegServer(astronaut)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def stop_event():
    event = threading.Event()
    yield event
    event.set()


# -- video files -------------------------------------------------------------

def test_video_file_yields_every_frame_with_video_timestamps(shared_data):
    section = CameraSection(source=hamilton(shared_data), realtime=False)
    with open_camera(section) as camera:
        frames = list(camera)
    assert len(frames) == 275
    assert [f.index for f in frames] == list(range(275))
    assert frames[0].t == 0.0
    steps = np.diff([f.t for f in frames])
    assert np.allclose(steps, 1 / 29.97, atol=1e-3)
    assert frames[0].rgb.shape == (360, 640, 3) and frames[0].rgb.dtype == np.uint8


def test_video_file_raises_end_of_stream_after_last_frame(shared_data):
    with open_camera(CameraSection(source=hamilton(shared_data), realtime=False)) as camera:
        for _ in range(275):
            camera.read()
        with pytest.raises(EndOfStream, match="hamilton.mp4"):
            camera.read()


def test_looping_video_file_restarts_with_growing_timestamps(shared_data):
    section = CameraSection(source=hamilton(shared_data), realtime=False, loop=True)
    with open_camera(section) as camera:
        frames = [camera.read() for _ in range(285)]
    times = [f.t for f in frames]
    assert all(b > a for a, b in zip(times, times[1:]))
    assert frames[275].index == 275
    assert np.array_equal(frames[275].rgb, frames[0].rgb)


def test_video_file_frames_are_rgb_not_bgr(shared_data):
    path = hamilton(shared_data)
    capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    ok, bgr = capture.read()
    capture.release()
    assert ok
    with open_camera(CameraSection(source=path, realtime=False)) as camera:
        assert np.array_equal(camera.read().rgb, bgr[:, :, ::-1])


def test_truncated_video_ends_early_with_a_warning(shared_data, tmp_path, caplog):
    source = cv2.VideoCapture(hamilton(shared_data), cv2.CAP_FFMPEG)
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 29.97, (640, 360))
    for _ in range(30):
        writer.write(source.read()[1])
    writer.release()
    source.release()
    data = clip.read_bytes()
    clip.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="hardware.camera"):
        with open_camera(CameraSection(source=str(clip), realtime=False)) as camera:
            frames = list(camera)
    assert 0 < len(frames) < 30
    assert "may be truncated" in caplog.text and "clip.avi" in caplog.text


def test_text_file_named_mp4_raises_video_error_naming_it(tmp_path):
    fake = tmp_path / "door-clip.mp4"
    fake.write_text("this is not a video\n")
    with pytest.raises(VideoError, match="door-clip.mp4"):
        open_camera(CameraSection(source=str(fake)))


def test_missing_video_file_raises_camera_unavailable(tmp_path):
    with pytest.raises(CameraUnavailable, match="does not exist"):
        open_camera(CameraSection(source=str(tmp_path / "nowhere.mp4")))


# -- image folders -----------------------------------------------------------

def test_folder_plays_images_in_name_order_at_folder_fps(photo_folder, astronaut, grace_hopper):
    section = CameraSection(source=str(photo_folder), realtime=False, folder_fps=4)
    with open_camera(section) as camera:
        frames = list(camera)
    assert len(frames) == 3
    assert np.array_equal(frames[0].rgb, astronaut)
    assert np.array_equal(frames[1].rgb, grace_hopper)
    assert np.array_equal(frames[2].rgb, astronaut[::-1])
    assert [f.t for f in frames] == [0.0, 0.25, 0.5]


def test_folder_skips_corrupt_image_with_warning_naming_it(photo_folder, grace_hopper, caplog):
    (photo_folder / "001b.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    with caplog.at_level(logging.WARNING, logger="hardware.camera"):
        with open_camera(CameraSection(source=str(photo_folder), realtime=False)) as camera:
            frames = list(camera)
    assert len(frames) == 3
    assert np.array_equal(frames[1].rgb, grace_hopper)
    assert [f.index for f in frames] == [0, 1, 2]
    assert any("001b.jpg" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_folder_end_raises_end_of_stream(photo_folder):
    with open_camera(CameraSection(source=str(photo_folder), realtime=False)) as camera:
        for _ in range(3):
            camera.read()
        with pytest.raises(EndOfStream):
            camera.read()


def test_looping_folder_of_only_corrupt_images_raises_instead_of_spinning(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"not an image")
    with open_camera(CameraSection(source=str(tmp_path), realtime=False, loop=True)) as camera:
        with pytest.raises(VideoError, match="no readable images"):
            camera.read()


def test_empty_folder_raises_camera_unavailable(tmp_path):
    with pytest.raises(CameraUnavailable, match="no images"):
        open_camera(CameraSection(source=str(tmp_path), kind="folder"))


def test_rotate_turns_frames_clockwise(photo_folder, grace_hopper):
    section = CameraSection(source=str(photo_folder), realtime=False, rotate=90)
    with open_camera(section) as camera:
        camera.read()
        frame = camera.read()
    assert np.array_equal(frame.rgb, np.rot90(grace_hopper, k=-1))


def test_realtime_folder_read_is_interrupted_by_stop_event(photo_folder, stop_event):
    section = CameraSection(source=str(photo_folder), realtime=True, folder_fps=0.01)
    camera = open_camera(section, stop=stop_event)
    camera.read()
    threading.Timer(0.2, stop_event.set).start()
    # The second frame is due in 100 s; the stop event must cut the wait short.
    with pytest.raises(CameraUnavailable, match="closed"):
        camera.read()
    camera.close()


def test_read_after_close_raises_camera_unavailable(photo_folder):
    camera = open_camera(CameraSection(source=str(photo_folder), realtime=False))
    camera.close()
    camera.close()
    with pytest.raises(CameraUnavailable, match="closed"):
        camera.read()


# -- V4L2 and Picamera2 ------------------------------------------------------

@pytest.mark.parametrize("source", ["/dev/video99", 99, "99"])
def test_missing_v4l2_device_raises_camera_unavailable(source):
    with pytest.raises(CameraUnavailable, match="does not exist"):
        open_camera(CameraSection(source=source))


def test_device_that_is_not_a_camera_raises_camera_unavailable():
    with pytest.raises(CameraUnavailable, match="not a video capture device"):
        open_camera(CameraSection(source="/dev/null", kind="v4l2"))


def test_missing_picamera2_explains_how_to_install_it():
    try:
        import picamera2  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("picamera2 is installed here")
    with pytest.raises(CameraUnavailable) as caught:
        open_camera(CameraSection(source="picamera2"))
    assert "python3-picamera2" in str(caught.value)
    assert "--system-site-packages" in str(caught.value)


def test_check_backend_fails_at_start_up_only_for_a_missing_library(tmp_path):
    try:
        import picamera2  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("picamera2 is installed here")
    with pytest.raises(CameraUnavailable, match="python3-picamera2"):
        check_backend(CameraSection(source=1, kind="picamera2"))
    # A camera that is merely absent now is the grabber's to retry, not a start-up failure.
    check_backend(CameraSection(source="/dev/video99"))
    check_backend(CameraSection(source=str(tmp_path / "later.mp4")))


# -- network cameras and secrets ---------------------------------------------

def test_mjpeg_url_camera_delivers_live_frames(mjpeg_camera, astronaut):
    section = CameraSection(source=mjpeg_camera.url(), open_timeout_seconds=5, read_timeout_seconds=5)
    with open_camera(section) as camera:
        frames = [camera.read() for _ in range(3)]
    assert camera.describe() == f"network camera {mjpeg_camera.url()}"
    assert frames[0].rgb.shape == astronaut.shape
    # JPEG is lossy, so compare loosely: the stream shows the astronaut, in RGB order.
    assert np.abs(frames[0].rgb.astype(int) - astronaut).mean() < 5
    assert frames[0].t < frames[1].t < frames[2].t
    assert [f.index for f in frames] == [0, 1, 2]


def test_redact_hides_url_password_and_secret_query_values():
    url = "rtsp://admin:hunter2@10.0.0.5:554/Streaming/Channels/102?channel=1&password=letmein"
    assert redact(url) == "rtsp://admin:***@10.0.0.5:554/Streaming/Channels/102?channel=1&password=***"
    assert redact("http://cam.local/mjpg") == "http://cam.local/mjpg"
    assert redact("/dev/video0") == "/dev/video0"


def test_scrub_hides_a_short_password_without_mangling_the_redacted_url():
    url = "rtsp://admin:554@10.0.0.5:554/stream2"
    text = f"FFmpeg said 554 about {url}"
    assert scrub(text, url) == "FFmpeg said *** about rtsp://admin:***@10.0.0.5:554/stream2"


def test_unreachable_url_error_and_logs_do_not_contain_the_password(caplog, capfd):
    url = f"rtsp://admin:s3cretpw@127.0.0.1:{free_port()}/stream2"
    section = CameraSection(source=url, open_timeout_seconds=2)
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(CameraUnavailable) as caught:
            open_camera(section)
    assert "s3cretpw" not in str(caught.value)
    assert "admin:***@127.0.0.1" in str(caught.value)
    assert "s3cretpw" not in caplog.text
    assert "s3cretpw" not in "".join(capfd.readouterr())
    assert "s3cretpw" not in describe_source(section)


def test_grabber_state_details_do_not_contain_the_password(stop_event):
    url = f"http://admin:s3cretpw@127.0.0.1:{free_port()}/stream.mjpg"
    log = StateLog()
    grabber = FrameGrabber(CameraSection(source=url, open_timeout_seconds=1, retry_initial_seconds=0.1),
                           stop_event, on_state=log)
    grabber.start()
    log.wait_for(lambda s: "retrying" in s)
    stop_event.set()
    grabber.join(10)
    assert log.states and all("s3cretpw" not in detail for _, detail in log.states)


# -- kind guessing and config ------------------------------------------------

@pytest.mark.parametrize("source, kind", [
    (0, "v4l2"),
    ("2", "v4l2"),
    ("/dev/video0", "v4l2"),
    ("/dev/v4l/by-id/usb-Logitech_C920-video-index0", "v4l2"),
    ("rtsp://admin:pw@10.0.0.5/stream2", "url"),
    ("HTTP://cam.local/mjpg", "url"),
    ("picamera2", "picamera2"),
    ("/srv/clips/door.mp4", "file"),
    ("frames/", "folder"),
])
def test_auto_kind_guesses_from_source_form(source, kind):
    assert guess_kind(source) == kind


def test_auto_kind_recognises_an_existing_folder(photo_folder):
    assert guess_kind(str(photo_folder)) == "folder"
    with open_camera(CameraSection(source=str(photo_folder), realtime=False)) as camera:
        assert camera.kind == "folder"


def test_explicit_kind_overrides_the_guess(tmp_path):
    with pytest.raises(CameraUnavailable, match="does not exist"):
        open_camera(CameraSection(source=str(tmp_path / "clip"), kind="folder"))


def test_config_rejects_retry_max_below_retry_initial():
    with pytest.raises(ValidationError, match="retry_initial_seconds"):
        CameraSection(retry_initial_seconds=10, retry_max_seconds=5)


def test_config_rejects_negative_device_index_and_unknown_keys():
    with pytest.raises(ValidationError):
        CameraSection(source=-1)
    with pytest.raises(ValidationError):
        CameraSection(sourse="/dev/video0")


def test_camera_errors_share_the_bytelocker_root():
    assert issubclass(EndOfStream, ByteLockerError) and issubclass(EndOfStream, EOFError)
    assert issubclass(CameraUnavailable, OSError)


# -- the frame grabber -------------------------------------------------------

def test_grabber_keeps_only_the_newest_frame_when_consumer_is_slow(shared_data, stop_event):
    log = StateLog()
    grabber = FrameGrabber(CameraSection(source=hamilton(shared_data), realtime=False), stop_event, on_state=log)
    grabber.start()
    # The slowest consumer: it takes nothing until the whole clip has been read.
    grabber.join(60)
    assert grabber.state == "ended"
    frame = grabber.latest(timeout=1)
    assert isinstance(frame, Frame) and frame.index == 274
    assert grabber.frames == 275 and grabber.dropped == 274
    assert grabber.latest(timeout=0.1) is None
    assert log.names() == ["ok", "ended"]


def test_grabber_never_returns_the_same_frame_twice(photo_folder, stop_event):
    section = CameraSection(source=str(photo_folder), realtime=False)
    grabber = FrameGrabber(section, stop_event, keep_all=True, queue_size=1)
    grabber.start()
    assert [frame.index for frame in grabber] == [0, 1, 2]


def test_grabber_keep_all_hands_over_every_frame_in_order(shared_data, stop_event):
    section = CameraSection(source=hamilton(shared_data), realtime=False)
    grabber = FrameGrabber(section, stop_event, keep_all=True, queue_size=4)
    grabber.start()
    assert [frame.index for frame in grabber] == list(range(275))
    assert grabber.dropped == 0
    assert grabber.state == "ended"


def test_latest_waits_out_its_timeout_after_the_source_ended(photo_folder, stop_event):
    grabber = FrameGrabber(CameraSection(source=str(photo_folder), realtime=False), stop_event)
    grabber.start()
    grabber.join(10)
    assert grabber.state == "ended"
    assert grabber.latest(timeout=1).index == 2
    # A door loop calling latest() after a clip ended must not spin at full CPU.
    started = time.monotonic()
    assert grabber.latest(timeout=0.3) is None
    assert time.monotonic() - started >= 0.25


def test_grabber_thread_is_named_camera(photo_folder, stop_event):
    grabber = FrameGrabber(CameraSection(source=str(photo_folder)), stop_event)
    assert grabber.name == "camera"


def test_grabber_stops_when_stop_event_is_set_during_a_realtime_wait(photo_folder, stop_event):
    log = StateLog()
    section = CameraSection(source=str(photo_folder), realtime=True, folder_fps=0.01)
    grabber = FrameGrabber(section, stop_event, on_state=log)
    grabber.start()
    assert grabber.latest(timeout=10).index == 0
    stop_event.set()
    grabber.join(10)
    assert not grabber.is_alive()
    assert log.names() == ["ok", "stopped"]
    assert grabber.latest(timeout=0.1) is None


def test_grabber_retries_a_missing_source_with_backoff_without_raising(tmp_path, stop_event):
    log = StateLog()
    section = CameraSection(source=str(tmp_path / "later.mp4"), retry_initial_seconds=0.1, retry_max_seconds=1)
    grabber = FrameGrabber(section, stop_event, on_state=log)
    grabber.start()
    log.wait_for(lambda s: s.count("retrying") >= 3)
    assert grabber.is_alive()
    details = [d for s, d in log.states if s == "retrying"]
    assert "in 0.1 s" in details[0] and "in 0.2 s" in details[1] and "in 0.4 s" in details[2]
    assert log.names()[0] == "lost"
    stop_event.set()
    grabber.join(10)
    assert log.names()[-1] == "stopped"


def test_grabber_picks_up_a_source_that_appears_later(tmp_path, astronaut, stop_event):
    folder = tmp_path / "frames"
    log = StateLog()
    section = CameraSection(source=str(folder), kind="folder", realtime=False,
                            retry_initial_seconds=0.1, retry_max_seconds=1)
    grabber = FrameGrabber(section, stop_event, on_state=log, keep_all=True)
    grabber.start()
    log.wait_for(lambda s: "retrying" in s)
    folder.mkdir()
    save_rgb(folder / "001.png", astronaut)
    frame = grabber.latest(timeout=20)
    assert frame is not None and np.array_equal(frame.rgb, astronaut)
    log.wait_for(lambda s: s[-1] == "ended")
    assert log.names()[:2] == ["lost", "retrying"] and "ok" in log.names()


def test_grabber_reports_lost_and_recovers_when_mjpeg_camera_returns(mjpeg_camera, stop_event):
    log = StateLog()
    section = CameraSection(source=mjpeg_camera.url("admin:s3cretpw@"), open_timeout_seconds=2,
                            read_timeout_seconds=2, retry_initial_seconds=0.1, retry_max_seconds=1)
    grabber = FrameGrabber(section, stop_event, on_state=log)
    grabber.start()
    assert grabber.latest(timeout=20) is not None
    log.wait_for(lambda s: s == ["ok"])

    mjpeg_camera.stop()
    log.wait_for(lambda s: s.count("retrying") >= 3)
    assert log.names()[:3] == ["ok", "lost", "retrying"]
    assert grabber.is_alive()

    mjpeg_camera.start()
    log.wait_for(lambda s: s[-1] == "ok")
    grabber.latest(timeout=0)  # a frame from before the outage may still be waiting
    frame = grabber.latest(timeout=20)
    assert frame is not None and frame.rgb.shape == (512, 512, 3)
    assert all("s3cretpw" not in detail for _, detail in log.states)

    stop_event.set()
    grabber.join(10)
    assert not grabber.is_alive() and log.names()[-1] == "stopped"


def test_grabber_survives_a_state_listener_that_raises(photo_folder, stop_event):
    def broken(state, detail):
        raise RuntimeError("listener bug")

    grabber = FrameGrabber(CameraSection(source=str(photo_folder), realtime=False), stop_event,
                           on_state=broken, keep_all=True)
    grabber.start()
    assert [grabber.latest(timeout=10).index for _ in range(3)] == [0, 1, 2]
    grabber.join(10)
    assert grabber.state == "ended"
