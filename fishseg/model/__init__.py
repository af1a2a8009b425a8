"""Segmentation models: the factory, encoder weights, saving and loading, the forward pass, the packaged inference model, probabilities back at the photo's size."""
