"""The evaluate stage: segmentation metrics, full-resolution scoring of the test split, and of any labelled folder (evaluate_folder)."""
