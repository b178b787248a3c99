"""Where dlib's model files live, found without importing ``pkg_resources``.

``face_recognition_models`` imports ``pkg_resources`` at import time, and
setuptools 82 and later no longer ship it, so we locate the package's folder
with :func:`importlib.util.find_spec` and never import it.
"""

import importlib.util
import os
from dataclasses import dataclass

from bytelocker.errors import ModelFilesMissing

PACKAGE = "face_recognition_models"
INSTALL_HINT = "install the 'face-recognition-models' package (pip install face-recognition-models)"

FILES = {
    "landmarks5": "shape_predictor_5_face_landmarks.dat",
    "resnet": "dlib_face_recognition_resnet_model_v1.dat",
    "cnn_detector": "mmod_human_face_detector.dat",
}


@dataclass(frozen=True)
class ModelPaths:
    """Absolute paths of the dlib model files ByteLocker uses."""

    landmarks5: str
    resnet: str
    cnn_detector: str


def models_dir(override=None):
    """Return the folder holding dlib's ``.dat`` files.

    ``override`` (e.g. from YAML) wins over the installed package.
    Raises :class:`ModelFilesMissing` naming the package to install.
    """
    if override:
        if not os.path.isdir(override):
            raise ModelFilesMissing(f"The face model folder {override} does not exist.")
        return override
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFilesMissing(f"The face models are not installed: {INSTALL_HINT}.")
    return os.path.join(list(spec.submodule_search_locations)[0], "models")


def model_paths(override=None):
    """Return :class:`ModelPaths`, checking that every file exists and is readable."""
    folder = models_dir(override)
    paths = {}
    for key, name in FILES.items():
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise ModelFilesMissing(
                f"The face model file {name} is missing from {folder}: {INSTALL_HINT}."
            )
        paths[key] = path
    return ModelPaths(**paths)
