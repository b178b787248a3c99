"""Shared fixtures: real sample faces, the shared data folder, a real broker."""

import os
import pathlib

import numpy as np
import pytest

from tests.brokers import Mosquitto

REPO = pathlib.Path(__file__).resolve().parent.parent
DATA_DIR = pathlib.Path(os.environ.get("BYTELOCKER_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data():
    """The real face data folder (``../shared/data`` or ``$BYTELOCKER_DATA``)."""
    if not DATA_DIR.is_dir():
        pytest.skip(f"shared face data not found at {DATA_DIR} (set BYTELOCKER_DATA)")
    return DATA_DIR


@pytest.fixture(scope="session")
def astronaut():
    """Eileen Collins, from scikit-image's sample data: RGB uint8, 512x512."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


@pytest.fixture(scope="session")
def grace_hopper():
    """Grace Hopper, from matplotlib's sample data: RGB uint8, 600x512."""
    import matplotlib.cbook
    from edge.images import load_rgb

    return load_rgb(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


@pytest.fixture(scope="session")
def detector():
    from edge.detect import FaceDetector

    return FaceDetector(model="hog", scale=1.0, upsample=0, min_face_px=40)


@pytest.fixture(scope="session")
def describer():
    from edge.describe import FaceDescriber

    return FaceDescriber()


@pytest.fixture
def central_db(tmp_path):
    """A fresh central SQLite database in ``tmp_path``, open through central.db."""
    from central.db import open_database

    db = open_database(f"sqlite:///{tmp_path / 'central.db'}")
    yield db
    db.close()


@pytest.fixture
def broker(tmp_path):
    """A real Mosquitto on a free loopback port, stopped after the test."""
    b = Mosquitto(tmp_path / "mosquitto")
    b.start()
    yield b
    b.stop()
