"""Segmentation models: the factory, encoder weights, saving and loading, the forward pass, the packaged inference model."""
