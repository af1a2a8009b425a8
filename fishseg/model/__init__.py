"""Segmentation models: the factory, encoder weights, saving and loading, the packaged inference model."""
