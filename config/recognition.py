"""The ``detection``, ``recognition`` and ``decision`` sections of door.yaml."""

from typing import Literal, Optional

from pydantic import Field

from config.base import Section


class DetectionSection(Section):
    """Face detection in the live loop."""

    model: Literal["hog", "cnn"] = Field("hog", description="dlib HOG (fast) or CNN (slow; for enrolment photos).")
    scale: float = Field(0.5, ge=0.1, le=1.0, description="Downscale factor applied before detection.")
    upsample: int = Field(1, ge=0, le=3, description="dlib upsampling passes on the scaled frame.")
    min_face_px: int = Field(60, ge=20, le=2000, description="Ignore faces narrower than this, pixels at full resolution.")
    motion_threshold: float = Field(
        2.0, ge=0.0, le=255.0,
        description="Mean absolute grey-level change between frames below which detection is skipped (0 disables the gate).",
    )


class RecognitionSection(Section):
    """Descriptors and 1:N matching."""

    engine: Literal["dlib", "fast"] = Field("dlib", description="Descriptor engine.")
    threshold: float = Field(0.45, gt=0.0, le=1.2, description="Euclidean distance; lower is stricter.")
    margin: float = Field(0.05, ge=0.0, le=0.5, description="Nearest person must beat the next other person by this distance.")
    models_dir: Optional[str] = Field(None, description="Folder of dlib model files; default is the installed package.")


class DecisionSection(Section):
    """Voting over frames of one tracked face."""

    votes_needed: int = Field(3, ge=1, le=30, description="K: frames that must agree on the same person to grant.")
    window_frames: int = Field(5, ge=1, le=60, description="N: frames considered for the vote; also frames with no match before 'unknown'.")
    track_iou: float = Field(0.3, ge=0.05, le=0.95, description="Box overlap that continues a track from one frame to the next.")
    track_timeout_seconds: float = Field(2.0, ge=0.1, le=60, description="A track not seen for this long is dropped, seconds.")
