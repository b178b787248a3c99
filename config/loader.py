"""Reading YAML files into config models, with errors facilities staff can act on.

(First cut: the config issue adds line numbers, duplicate-key detection,
migrations and secrets.)
"""

import os

import yaml
from pydantic import ValidationError

from bytelocker.errors import ConfigError
from config.central import CentralConfig
from config.door import DoorConfig


def _read(path):
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file: {exc.strerror or exc}.") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}.") from exc
    return data or {}


def load(path, model):
    """Validate the YAML file at ``path`` against ``model``; raise :class:`ConfigError`."""
    data = _read(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the file must be a mapping of sections, not {type(data).__name__}.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        name = os.path.basename(path)
        problems = [
            f"{name}: {'.'.join(str(p) for p in err['loc'])} is {err.get('input')!r}, but {err['msg']}"
            for err in exc.errors()
        ]
        raise ConfigError("\n".join(problems), problems) from None


def load_door_config(path=None):
    """Return the :class:`DoorConfig` in ``path``, or the embedded defaults if None."""
    return DoorConfig() if path is None else load(path, DoorConfig)


def load_central_config(path=None):
    """Return the :class:`CentralConfig` in ``path``, or the embedded defaults if None."""
    return CentralConfig() if path is None else load(path, CentralConfig)
