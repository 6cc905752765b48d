"""Training engine: losses, on-device augmentation, loops."""
