"""One tiny trained model per test session, shared by the modules that only read it."""

from __future__ import annotations

from pathlib import Path

import pytest

from fishseg.training.train import train

from .conftest import tiny, write_prepared

_trained: dict[str, Path] = {}


def trained_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``models/model`` from a tiny real training run (trained once, then reused; do not modify it)."""
    if "model_dir" not in _trained:
        paths = write_prepared(tmp_path_factory.mktemp("trained"))
        train(tiny(), paths, progress=False)
        _trained["model_dir"] = paths.model_dir
    return _trained["model_dir"]
