"""Data augmentation, batched on the training device: a building block used by the training
engine (fine-tuning, §2.3.2), by the pretexts (augmentation upon loading) and by the contrastive
methods' views (§2.6.1.2-3), kept apart from all of them as MONAI keeps its transforms.
"""

from ichbench.transforms.affine import (affine_grid, affine_theta, augment_batch, compose_theta,
                                        random_affine, sample_affine_params, warp)
from ichbench.transforms.views import (T_GLOBAL, T_LOCAL, ViewTransform, adjust_brightness,
                                       adjust_contrast, contrastive_view, gaussian_blur,
                                       random_brightness, random_contrast, random_gaussian_blur,
                                       random_resized_crop, random_resized_crop_theta)

__all__ = ["T_GLOBAL", "T_LOCAL", "ViewTransform", "adjust_brightness", "adjust_contrast", "affine_grid",
           "affine_theta", "augment_batch", "compose_theta", "contrastive_view", "gaussian_blur",
           "random_affine", "random_brightness", "random_contrast", "random_gaussian_blur",
           "random_resized_crop", "random_resized_crop_theta", "sample_affine_params", "warp"]
