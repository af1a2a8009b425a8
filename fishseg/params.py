"""The one typed, validated loader for ``params.yaml``.

Every stage reads its settings through :func:`load_params`. The whole file is checked
(types, ranges, choices, unknown keys) so that a typo fails before any work is done,
with a one-line message naming the key, the value and what is allowed.

YAML 1.1 (PyYAML) reads ``1e-4`` as a string; ``dvc exp run -S train.lr=1e-4`` writes
exactly that, so numeric fields accept numeric strings.
"""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fishseg.errors import FishsegError
from fishseg.redact import redact_uri, uri_secrets

_STRICT = ConfigDict(extra="forbid", frozen=True)
# A params file is a few KB; anything near this is not one (and YAML aliases can make a
# small file expand when its values are printed, hence the bounded repr below).
MAX_PARAMS_BYTES = 1 << 20
MAX_IMAGE_SIDE = 4096

# The loss names ``train.loss`` accepts (fishseg.training.losses builds each).
LossName = Literal["dice_bce", "dice", "bce", "focal_dice"]


class SyntheticParams(BaseModel):
    model_config = _STRICT
    photos_per_species: int = Field(10, ge=1, le=1000)
    copies_per_photo: int = Field(4, ge=1, le=100)
    width: int = Field(590, ge=32, le=4096)
    height: int = Field(445, ge=32, le=4096)
    seed: int = 0


class DataParams(BaseModel):
    model_config = _STRICT
    source: str = "synthetic"
    kaggle_dataset: str = "crowww/a-large-scale-fish-dataset"
    image_size: tuple[int, int] = (96, 128)
    on_invalid: Literal["error", "skip"] = "error"
    # Decompression-bomb guards: pixels per image (read from the header before decoding),
    # bytes and members per archive, and how much one archive member may expand.
    max_image_pixels: int = Field(50_000_000, gt=0, le=1 << 30)
    max_archive_bytes: int = Field(10_000_000_000, gt=0)
    max_archive_members: int = Field(50_000, gt=0)
    max_archive_ratio: float = Field(200.0, ge=1.0)
    download_retries: int = Field(4, ge=0, le=20)
    download_backoff_s: float = Field(2.0, ge=0.0, le=600.0)
    download_timeout_s: float = Field(60.0, gt=0.0, le=3600.0)
    synthetic: SyntheticParams = SyntheticParams()

    @field_validator("image_size")
    @classmethod
    def _multiple_of_32(cls, value: tuple[int, int]) -> tuple[int, int]:
        if any(v < 32 or v % 32 or v > MAX_IMAGE_SIDE for v in value):
            raise ValueError(
                f"both sides must be multiples of 32 from 32 to {MAX_IMAGE_SIDE}, e.g. [96, 128]"
            )
        return value

    @field_validator("source")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be 'realfish', 'synthetic', 'kaggle' or a path to a .zip or folder")
        return value


class SplitParams(BaseModel):
    model_config = _STRICT
    strategy: Literal["group", "random"] = "group"
    group_threshold: float = Field(1.0, gt=0.0, le=10.0)
    val: float = Field(0.15, ge=0.0, lt=1.0)
    test: float = Field(0.15, gt=0.0, lt=1.0)
    seed: int = 42

    @field_validator("test")
    @classmethod
    def _room_for_train(cls, value: float, info: Any) -> float:
        val = info.data.get("val", 0.0)
        if val + value >= 0.9:
            raise ValueError(f"val + test = {val + value:g} leaves too little for train (< 0.9)")
        return value


class ModelParams(BaseModel):
    model_config = _STRICT
    arch: str = "Unet"
    encoder: str = "mobilenet_v2"
    encoder_weights: str | None = None
    freeze_encoder: bool = False


class TrainParams(BaseModel):
    model_config = _STRICT
    epochs: int = Field(16, ge=1, le=10_000)
    batch_size: int = Field(8, ge=1, le=4096)
    lr: float = Field(2e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(1e-4, ge=0.0, le=1.0)
    loss: LossName = "dice_bce"
    scheduler: Literal["cosine", "onecycle", "plateau", "none"] = "cosine"
    warmup_epochs: int = Field(1, ge=0)
    seed: int = 0
    device: str = "auto"
    num_workers: int | Literal["auto"] = "auto"
    deterministic: bool = True
    reproducible: bool = False
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool = True
    compile: bool = False
    accumulate: int = Field(1, ge=1, le=1024)
    patience: int = Field(0, ge=0)
    nproc_per_node: int = Field(1, ge=1, le=64)

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
            return value
        raise ValueError("must be one of auto, cpu, cuda, cuda:N")

    @field_validator("num_workers")
    @classmethod
    def _workers(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 0:
            raise ValueError("must be 'auto' or an integer >= 0")
        return value


class AugmentParams(BaseModel):
    model_config = _STRICT
    hflip: float = Field(0.5, ge=0.0, le=1.0)
    vflip: float = Field(0.5, ge=0.0, le=1.0)
    rotate90: float = Field(0.5, ge=0.0, le=1.0)
    rotate_limit: float = Field(20.0, ge=0.0, le=180.0)
    rotate_p: float = Field(0.3, ge=0.0, le=1.0)
    brightness_contrast: float = Field(0.2, ge=0.0, le=1.0)
    brightness_contrast_p: float = Field(0.5, ge=0.0, le=1.0)
    hue_saturation_p: float = Field(0.3, ge=0.0, le=1.0)


class EvaluateParams(BaseModel):
    model_config = _STRICT
    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    worst_k: int = Field(8, ge=1, le=1000)
    tta: bool = False
    boundary_tolerance: int = Field(2, ge=0, le=50)


class PlotParams(BaseModel):
    model_config = _STRICT
    grid_rows: int = Field(4, ge=1, le=50)
    seed: int = 0
    dpi: int = Field(100, ge=30, le=600)


class MlflowParams(BaseModel):
    model_config = _STRICT
    tracking_uri: str | None = None
    experiment: str = Field("fishseg", min_length=1)
    log_model: bool = True
    register_model: str | None = None

    @field_validator("tracking_uri")
    @classmethod
    def _no_secrets(cls, value: str | None) -> str | None:
        # params.yaml is committed to git, copied into dvc.lock and logged to MLflow.
        if value is not None and uri_secrets(value):
            raise ValueError(
                "holds a password or token, and params.yaml goes into git, dvc.lock and MLflow: "
                "remove it and export MLFLOW_TRACKING_URI with the full URI instead (or use "
                "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD)"
            )
        return value

    @field_validator("register_model")
    @classmethod
    def _model_name(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must be a registered model name or null")
        return value

    @model_validator(mode="after")
    def _registration_needs_a_logged_model(self) -> MlflowParams:
        # Only a logged MLflow model can be registered; the checkpoint artifact cannot.
        if self.register_model and not self.log_model:
            raise ValueError("mlflow.register_model needs mlflow.log_model: true")
        return self


class Params(BaseModel):
    """All of ``params.yaml``: one section per concern."""

    model_config = _STRICT
    data: DataParams = DataParams()
    split: SplitParams = SplitParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    augment: AugmentParams = AugmentParams()
    evaluate: EvaluateParams = EvaluateParams()
    plot: PlotParams = PlotParams()
    mlflow: MlflowParams = MlflowParams()

    def flat(self) -> dict[str, Any]:
        """``{"train.lr": 0.002, ...}``: the form MLflow and DVC show."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for key, sub in value.items():
                    walk(f"{prefix}.{key}" if prefix else key, sub)
            else:
                out[prefix] = list(value) if isinstance(value, tuple) else value

        walk("", self.model_dump())
        return out


class ParamsError(FishsegError):
    """params.yaml is missing, not YAML, or has a bad value."""


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown key {key!r}: remove it or check its spelling"
    # reprlib: a value built from YAML aliases may be huge once written out in full.
    value = redact_uri(_SHORT.repr(error.get("input")))
    msg = error["msg"].removeprefix("Value error, ")
    return f"{key} = {value}: {msg}"


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 120


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate an already-parsed mapping (as read from YAML)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())
        raise ParamsError(f"{source}: {problems}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``; raise :class:`ParamsError` with the bad key."""
    path = Path(path)
    try:
        if not path.is_file():
            raise FileNotFoundError(path)
        if path.stat().st_size > MAX_PARAMS_BYTES:
            raise ParamsError(
                f"{path}: {path.stat().st_size} bytes, not a params file (at most {MAX_PARAMS_BYTES}); "
                "restore it from git (git checkout params.yaml)"
            )
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found; run from the project root or pass --params") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ParamsError(f"{path}: cannot read it ({exc}); restore it from git") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParamsError(
            f"{path}: not valid YAML ({exc.__class__.__name__}: {exc})".replace("\n", " ")
        ) from None
    except (ValueError, RecursionError) as exc:
        # ValueError: an integer of more than 4300 digits; RecursionError: nesting thousands deep.
        raise ParamsError(
            f"{path}: not a params file ({type(exc).__name__}: {str(exc)[:120]}); restore it from git"
        ) from None
    return parse_params(raw, str(path))
