"""The train stage: loaders, augmentation, losses, the training loop, resume state, torchrun/DDP."""
