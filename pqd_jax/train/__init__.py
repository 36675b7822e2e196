"""Training: losses, augmentations, teacher and student training."""
