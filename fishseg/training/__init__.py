"""The train stage: runtime, loaders, augmentation, losses, the engine, the loop, resume state, torchrun/DDP."""
