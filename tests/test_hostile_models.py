"""Hostile models: nothing in a model folder runs code or exhausts memory.

The pickled models carry a real payload: unpickling them creates a marker file (and the
last test shows that MLflow's own loader, left to its defaults, does run it). Every case
goes through ``python -m fishseg.predict`` (or ``fishseg.export``) in its own process:
exit status, one error line naming the model and the fix, the marker never created,
nothing written, peak memory bounded.
"""

from __future__ import annotations

import json
import pickle
import shutil
import zipfile
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.models import infer_signature

from fishseg.model.inference import InferenceModel
from fishseg.params import Params
from fishseg.tracking import store as tracking
from tests._hostile import MLFLOW_BOUND_MB, PYTHON, REPO, TORCH_BOUND_MB, Outcome, assert_refused, run_command
from tests.helpers import image_bytes, write

pytestmark = pytest.mark.slow  # each case is a process that imports torch (and MLflow)


class Payload:
    """Unpickling this opens (creates) a file: the stand-in for any code an attacker wants run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


MLMODEL = {
    "flavors": {
        "pytorch": {"code": None, "model_data": "data", "pytorch_version": torch.__version__},
        "python_function": {"loader_module": "mlflow.pytorch", "data": "data", "env": {}},
    },
    "mlflow_version": mlflow.__version__,
}


def pickled_mlflow_model(folder: Path, marker: Path, **flavor: object) -> Path:
    """An MLflow model folder in the pickle format whose model.pth runs the payload."""
    spec = json.loads(json.dumps(MLMODEL))
    spec["flavors"]["pytorch"].update(flavor)
    write(folder / "MLmodel", json.dumps(spec).encode())  # JSON is YAML
    write(folder / "data" / "model.pth", pickle.dumps(Payload(marker)))
    write(folder / "data" / "pickle_module_info.txt", b"pickle")
    return folder


@pytest.fixture(scope="module")
def model_dir(trained) -> Path:
    return trained.paths.model_dir


@pytest.fixture(scope="module")
def pt2_model(tmp_path_factory) -> Path:
    """A sound MLflow pt2 model folder, as mlflow.pytorch.log_model writes it."""
    root = tmp_path_factory.mktemp("pt2")
    (root / "dvc.yaml").write_text("stages: {}\n")
    experiment = tracking.setup(Params().mlflow, root)
    model = InferenceModel(torch.nn.Conv2d(3, 1, 3, padding=1), [0.5] * 3, [0.2] * 3).eval()
    example = np.random.default_rng(0).uniform(0, 255, (2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        signature = infer_signature(example, model(torch.from_numpy(example)).numpy())
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.pytorch.log_model(
            model, name="model", signature=signature, input_example=example, pip_requirements=["torch"]
        )
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=info.model_uri, dst_path=str(root / "dl")))


def predict(tmp: Path, model: str, *, root: Path | None = None) -> Outcome:
    photo = write(tmp / "photo.png", image_bytes(2))
    argv = ["python", "-m", "fishseg.predict", str(photo), "--model", model, "--out", str(tmp / "out")]
    argv += ["--no-progress", "--root", str(root or tmp)]
    return run_command(argv, tmp, env={"PYTHONPATH": str(REPO), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})


def assert_model_refused(
    outcome: Outcome, tmp: Path, marker: Path | None, *needles: str, bound_mb: float = TORCH_BOUND_MB
) -> None:
    assert_refused(outcome, *needles, bound_mb=bound_mb)
    assert marker is None or not marker.exists()
    assert not (tmp / "out").exists()


# --------------------------------------------------------------------------- MLflow models


def test_pickled_mlflow_model_folder(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    folder = pickled_mlflow_model(tmp_path / "model", marker)
    outcome = predict(tmp_path, str(folder))
    assert_model_refused(outcome, tmp_path, marker, str(folder), "a pickled model (model.pth", "pt2 format")


def test_pickled_mlflow_model_from_the_tracking_store(tmp_path: Path) -> None:
    """Anyone who can write to a tracking server can put this there: runs:/ is refused the same way."""
    marker = tmp_path / "pwned"
    folder = pickled_mlflow_model(tmp_path / "model", marker)
    root = tmp_path / "project"
    root.mkdir()
    (root / "dvc.yaml").write_text("stages: {}\n")
    with mlflow.start_run(experiment_id=tracking.setup(Params().mlflow, root)) as run:
        mlflow.log_artifacts(str(folder), "model")
    uri = f"runs:/{run.info.run_id}/model"
    outcome = predict(tmp_path, uri, root=root)
    needles = (uri, "a pickled model (model.pth", "pt2 format")
    assert_model_refused(outcome, tmp_path, marker, *needles, bound_mb=MLFLOW_BOUND_MB)


def test_mlflow_model_shipping_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    folder = pickled_mlflow_model(tmp_path / "model", marker, code="code")
    write(folder / "code" / "numpy_extra.py", f"open({str(marker)!r}, 'w')\n".encode())
    outcome = predict(tmp_path, str(folder))
    assert_model_refused(outcome, tmp_path, marker, str(folder), "it ships code", "never run")


def test_pt2_model_with_a_pickled_record(tmp_path: Path, pt2_model: Path) -> None:
    """A pt2 archive with one record that is a pickle: MLflow's check (pickle refused) stops it."""
    marker = tmp_path / "pwned"
    folder = tmp_path / "model"
    shutil.copytree(pt2_model, folder)
    archive = folder / "data" / "model.pt2"
    prefix = zipfile.ZipFile(archive).namelist()[0].split("/")[0]
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr(f"{prefix}/data/constants/extra.pt", pickle.dumps(Payload(marker)))
    outcome = predict(tmp_path, str(folder))
    assert_model_refused(
        outcome, tmp_path, marker, str(folder), "cannot load it", "not a pickle-free payload"
    )


def test_pt2_model_that_is_a_zip_bomb(tmp_path: Path, pt2_model: Path) -> None:
    """MLflow's check reads each record whole: a record expanding 1000-fold is refused first."""
    folder = tmp_path / "model"
    shutil.copytree(pt2_model, folder)
    archive = folder / "data" / "model.pt2"
    with (
        zipfile.ZipFile(archive, "a", zipfile.ZIP_DEFLATED) as zf,
        zf.open("x/data/constants/zeros", "w") as out,
    ):
        for _ in range(100):
            out.write(bytes(1 << 20))
    outcome = predict(tmp_path, str(folder))
    assert_model_refused(
        outcome, tmp_path, None, str(folder), "not a sound archive", "max_archive_ratio = 10"
    )


def test_mlmodel_that_is_not_yaml(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    write(folder / "MLmodel", b"flavors: [unclosed\n\t: :")
    outcome = predict(tmp_path, str(folder))
    assert_model_refused(outcome, tmp_path, None, str(folder), "no readable MLmodel file", "pt2 format")


def test_pickled_models_really_run_code_without_the_checks(tmp_path: Path) -> None:
    """Guards the guard: MLflow, left to its defaults, runs the payload of the folder above."""
    marker = tmp_path / "pwned"
    folder = pickled_mlflow_model(tmp_path / "model", marker)
    run_command([PYTHON, "-c", f"import mlflow; mlflow.pytorch.load_model({str(folder)!r})"], tmp_path)
    assert marker.exists()


# --------------------------------------------------------------------------- models/model folders


def copy_model(model_dir: Path, tmp: Path) -> Path:
    folder = tmp / "model"
    shutil.copytree(model_dir, folder)
    return folder


def edit_json(path: Path, **changes: object) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_model_folder_with_a_pickled_bin_instead_of_safetensors(tmp_path: Path, model_dir: Path) -> None:
    marker = tmp_path / "pwned"
    folder = copy_model(model_dir, tmp_path)
    (folder / "model.safetensors").unlink()
    write(folder / "pytorch_model.bin", pickle.dumps(Payload(marker)))
    outcome = predict(tmp_path, str(folder))
    assert_model_refused(outcome, tmp_path, marker, "model.safetensors: missing", "never loaded")


def test_model_config_asking_for_gigabytes(tmp_path: Path, model_dir: Path) -> None:
    """A config describing a 6 GB decoder for a 2 MB weights file: refused before allocating."""
    folder = copy_model(model_dir, tmp_path)
    edit_json(folder / "config.json", decoder_channels=[4096] * 5)
    outcome = predict(tmp_path, str(folder))
    assert_model_refused(
        outcome,
        tmp_path,
        None,
        str(folder / "config.json"),
        "describes a model of",
        "not one the train stage wrote",
    )


def test_model_config_naming_another_class(tmp_path: Path, model_dir: Path) -> None:
    folder = copy_model(model_dir, tmp_path)
    edit_json(folder / "config.json", _model_class="Module")
    outcome = predict(tmp_path, str(folder))
    assert_model_refused(outcome, tmp_path, None, "_model_class 'Module' is not an smp architecture")


def test_model_config_that_is_not_json(tmp_path: Path, model_dir: Path) -> None:
    folder = copy_model(model_dir, tmp_path)
    (folder / "config.json").write_text("{'arch': Unet")
    outcome = predict(tmp_path, str(folder))
    assert_model_refused(
        outcome, tmp_path, None, str(folder / "config.json"), "not a model config", "run the train stage"
    )


def test_corrupt_weights(tmp_path: Path, model_dir: Path) -> None:
    folder = copy_model(model_dir, tmp_path)
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[8:40] = b"#" * 32  # the JSON header that says where each tensor is
    (folder / "model.safetensors").write_bytes(bytes(data))
    outcome = predict(tmp_path, str(folder))
    assert_model_refused(
        outcome, tmp_path, None, str(folder / "model.safetensors"), "run the train stage again"
    )


def test_preprocessing_record_with_a_zero_std(tmp_path: Path, model_dir: Path) -> None:
    folder = copy_model(model_dir, tmp_path)
    edit_json(folder / "preprocessing.json", std=[0.0, 0.2, 0.2])
    outcome = predict(tmp_path, str(folder))
    assert_model_refused(
        outcome,
        tmp_path,
        None,
        str(folder / "preprocessing.json"),
        "std positive",
        "run the train stage again",
    )


def test_export_of_a_model_computing_nan(tmp_path: Path, model_dir: Path) -> None:
    """NaN weights: the parity difference is NaN (and NaN > tolerance is False): still a failure."""
    from safetensors.torch import load_file, save_file

    folder = copy_model(model_dir, tmp_path)
    state = load_file(folder / "model.safetensors")
    key = next(k for k in state if k.startswith("segmentation_head") and k.endswith("weight"))
    state[key] = torch.full_like(state[key], float("nan"))
    save_file(state, folder / "model.safetensors")
    out = tmp_path / "model.onnx"
    argv = ["python", "-m", "fishseg.export", "--model", str(folder), "--out", str(out)]
    outcome = run_command(argv, tmp_path, env={"PYTHONPATH": str(REPO)})
    assert_refused(
        outcome, "differs from PyTorch by nan", f"{out} was not written", code=1, bound_mb=TORCH_BOUND_MB
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
