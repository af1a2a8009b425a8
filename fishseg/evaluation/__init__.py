"""The evaluate stage: segmentation metrics and full-resolution scoring of the test split."""
