"""The ``camera`` section of door.yaml: where the door's frames come from.

See docs/camera.md for examples of each source.
"""

from typing import Literal, Optional, Union

from pydantic import Field, ValidationInfo, field_validator

from config.base import Section


class CameraSection(Section):
    """Where frames come from, and how a lost camera is retried."""

    source: Union[int, str] = Field(
        0,
        description="A V4L2 device (index like 0 or a path like /dev/video0 or /dev/v4l/by-id/...), an "
        "rtsp:// or http(s):// URL, a video file, a folder of images, or 'picamera2'. Put passwords "
        "in the URL only if the camera needs them; they are never logged.",
    )
    kind: Literal["auto", "v4l2", "url", "file", "folder", "picamera2"] = Field(
        "auto",
        description="How to read 'source': 'auto' guesses from its form (a number or /dev/ path is V4L2, "
        "a scheme:// is a URL, a folder is a folder, 'picamera2' is the Pi camera, anything else a file).",
    )
    width: Optional[int] = Field(
        None, ge=64, le=7680,
        description="Frame width in pixels to ask a V4L2 or Pi camera for (other sources keep their own size).",
    )
    height: Optional[int] = Field(
        None, ge=48, le=4320,
        description="Frame height in pixels to ask a V4L2 or Pi camera for (other sources keep their own size).",
    )
    fourcc: Optional[str] = Field(
        None, pattern=r"^[A-Z0-9]{4}$",
        description="Pixel format to ask a V4L2 camera for, e.g. MJPG (many USB cameras only give "
        "full frame rate at 1280x720 and above in MJPG). Leave empty for the camera's default.",
    )
    rotate: Literal[0, 90, 180, 270] = Field(
        0, description="Turn every frame clockwise by this many degrees, for cameras mounted sideways or upside down.",
    )
    realtime: bool = Field(
        True,
        description="Play video files and folders at their own frame rate, like a camera "
        "(false: as fast as they can be read, for tests and evaluation).",
    )
    folder_fps: float = Field(5.0, gt=0, le=120, description="Frame rate of a folder of images, frames/s.")
    loop: bool = Field(False, description="Start a video file or folder again when it ends.")
    open_timeout_seconds: float = Field(
        10.0, ge=1, le=120, description="How long to wait for a network camera to answer when opening it, seconds.",
    )
    read_timeout_seconds: float = Field(
        5.0, ge=1, le=120,
        description="How long a network camera may send nothing before it counts as lost, seconds.",
    )
    rtsp_transport: Literal["tcp", "udp"] = Field(
        "tcp",
        description="How RTSP video travels: tcp (default; no torn frames on a lossy network) or udp (lower latency).",
    )
    retry_initial_seconds: float = Field(
        1.0, ge=0.1, le=60, description="First wait before reopening a lost camera, seconds; doubles on each failure.",
    )
    retry_max_seconds: float = Field(
        30.0, ge=1, le=600,
        description="Longest wait between reopen attempts, seconds; must not be less than retry_initial_seconds.",
    )

    @field_validator("source")
    @classmethod
    def _source_is_sensible(cls, value):
        if isinstance(value, int) and value < 0:
            raise ValueError("a V4L2 device index must be 0 or more")
        if isinstance(value, str) and not value.strip():
            raise ValueError("the camera source must not be empty")
        return value

    @field_validator("retry_max_seconds")
    @classmethod
    def _max_not_below_initial(cls, value, info: ValidationInfo):
        initial = info.data.get("retry_initial_seconds")
        if initial is not None and value < initial:
            raise ValueError(f"must not be less than retry_initial_seconds ({initial})")
        return value
