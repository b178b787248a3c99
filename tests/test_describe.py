"""Face descriptors: alignment into chips, and the optional mirror averaging."""

import numpy as np
import pytest

from edge.describe import FaceDescriber


def test_describe_returns_one_128_d_descriptor_per_face(detector, describer, astronaut):
    boxes = detector.detect(astronaut)
    descriptors = describer.describe(astronaut, boxes)
    assert descriptors.shape == (len(boxes), 128) and descriptors.dtype == np.float32


def test_mirror_descriptor_is_the_mean_of_the_chip_and_its_mirror_image(detector, describer, grace_hopper):
    boxes = detector.detect(grace_hopper)
    mirrored = FaceDescriber(engine=describer.engine, augment="mirror")
    chip = describer.chips(grace_hopper, boxes)[0]
    both = describer.engine.describe_chips([chip, np.ascontiguousarray(chip[:, ::-1])])

    assert np.allclose(mirrored.describe(grace_hopper, boxes)[0], both.mean(axis=0), atol=1e-6)
    assert not np.allclose(both[0], both[1], atol=1e-3)  # the mirror image really is a different view


def test_unknown_augmentation_is_refused_when_the_describer_is_made():
    with pytest.raises(ValueError, match="mirror"):
        FaceDescriber(augment="jitter")
