"""fishseg: fish segmentation pipeline (DVC stages, MLflow tracking)."""

__version__ = "0.1.0"
