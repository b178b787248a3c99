"""The ``detection``, ``recognition`` and ``decision`` sections of door.yaml."""

from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from config.base import Section


class DetectionSection(Section):
    """Face detection in the live loop.

    HOG finds faces down to about 80 / (scale * 2**upsample) pixels wide.  The
    defaults (full resolution, no upsampling) find faces from ~80 px, which a
    person at the door is at 640x480 or 640x360, for ~23 ms per 640x480 frame;
    ``scale: 0.5, upsample: 1`` finds the same faces at the same cost, and
    ``scale: 0.5, upsample: 0`` is 4x cheaper but misses faces under ~160 px.
    """

    model: Literal["hog", "cnn"] = Field("hog", description="dlib HOG (fast) or CNN (slow; for enrolment photos).")
    scale: float = Field(
        1.0, ge=0.1, le=1.0,
        description="Downscale factor applied before detection; lower is cheaper but misses small faces "
        "(use 0.5 for a 1280x720 camera, 0.33 for 1920x1080).",
    )
    upsample: int = Field(0, ge=0, le=3, description="dlib upsampling passes on the scaled frame; each finds faces half the size at 4x the cost.")
    min_face_px: int = Field(60, ge=20, le=2000, description="Ignore faces narrower than this, pixels at full resolution.")
    motion_threshold: float = Field(
        6.0, ge=0.0, le=255.0,
        description="Grey levels: while no face is tracked, detection is skipped unless some part of the "
        "picture changed by this much since the last examined frame (0 disables the gate).",
    )


class RecognitionSection(Section):
    """Descriptors and 1:N matching."""

    engine: Literal["dlib", "fast"] = Field(
        "fast",
        description="Descriptor engine: 'fast' runs dlib's own network on onnxruntime (same descriptors within "
        "1e-4, ~20x cheaper; checked against dlib at start-up, falling back to it on a mismatch); 'dlib' is "
        "dlib-bin's unaccelerated original (see docs/fast-engine.md).",
    )
    augment: Literal["none", "mirror"] = Field(
        "none",
        description="How faces are described: 'none', each face as it is, the only way central enrols. Live "
        "and enrolled descriptors must be made the same way, so a door cannot choose another; "
        "`bytelocker eval ... --augment mirror` measures the alternative (see docs/accuracy.md).",
    )
    @field_validator("augment")
    @classmethod
    def _augment_central_enrols_with(cls, value):
        if value != "none":
            raise ValueError(
                f"central enrols everyone with 'none', and a door must describe faces as they were enrolled; "
                f"measure '{value}' with `bytelocker eval pairs|gallery|video --augment {value}` instead")
        return value

    threshold: float = Field(
        0.50, gt=0.0, le=1.2,
        description="Euclidean distance a face must be within to match a person; lower keeps more strangers "
        "out and turns more staff away (see docs/accuracy.md for the measured trade-off).",
    )
    margin: float = Field(
        0.08, ge=0.0, le=0.5,
        description="The nearest person must be nearer than the next other person (or cohort face) by this "
        "distance, else the face is ambiguous; this is what keeps strangers out of a large gallery.",
    )
    cohort_file: Optional[str] = Field(
        None,
        description="Optional .npy file of (N, 128) descriptors of people who are never enrolled; a face as "
        "near one of them as to its best match is not matched (stricter, see docs/accuracy.md).",
    )
    models_dir: Optional[str] = Field(None, description="Folder of dlib model files; default is the installed package.")


class DecisionSection(Section):
    """Voting over frames of one tracked face."""

    votes_needed: int = Field(3, ge=1, le=30, description="K: frames that must agree on the same person to grant.")
    window_frames: int = Field(10, ge=1, le=60, description="N: frames considered for the vote; also frames with no match before 'unknown'.")
    track_iou: float = Field(0.3, ge=0.05, le=0.95, description="Box overlap that continues a track from one frame to the next.")
    track_timeout_seconds: float = Field(2.0, ge=0.1, le=60, description="A track not seen for this long is dropped, seconds.")
    retry_seconds: float = Field(
        1.0, ge=0.0, le=60,
        description="A face called unknown or ambiguous gets a fresh vote after this long, then after twice "
        "that, and so on, seconds; 0 makes every decision final.",
    )

    @model_validator(mode="after")
    def _votes_fit_in_window(self):
        if self.votes_needed > self.window_frames:
            raise ValueError(f"votes_needed ({self.votes_needed}) cannot be more than "
                             f"window_frames ({self.window_frames})")
        return self
