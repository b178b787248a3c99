"""The ``camera`` section of door.yaml."""

from typing import Literal, Optional, Union

from pydantic import Field

from config.base import Section


class CameraSection(Section):
    """Where frames come from."""

    source: Union[int, str] = Field(
        0,
        description="A V4L2 device (index like 0 or a path like /dev/video0), an rtsp:// or "
        "http(s):// URL, a video file, a folder of images, or 'picamera2'.",
    )
    kind: Literal["auto", "v4l2", "url", "file", "folder", "picamera2"] = Field(
        "auto", description="How to read 'source'; 'auto' guesses from its form."
    )
    width: Optional[int] = Field(None, ge=64, le=7680, description="Requested frame width in pixels.")
    height: Optional[int] = Field(None, ge=48, le=4320, description="Requested frame height in pixels.")
    realtime: bool = Field(
        True, description="Play video files and folders at their own frame rate (false: as fast as possible)."
    )
    folder_fps: float = Field(5.0, gt=0, le=120, description="Frame rate of a folder of images, frames/s.")
    loop: bool = Field(False, description="Start a video file or folder again when it ends.")
    retry_initial_seconds: float = Field(1.0, ge=0.1, le=60, description="First wait before reopening a lost camera, seconds.")
    retry_max_seconds: float = Field(30.0, ge=1, le=600, description="Longest wait between reopen attempts, seconds.")
