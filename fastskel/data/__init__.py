"""Skeleton data: format readers, the synthetic default dataset, batched transforms, datasets.

Layout ``x (N, C, T, V, M)`` float32 + ``lengths`` + ``y`` (SPEC §2, §6). ``fastskel.data`` stands
alone: it depends on ``fastskel.graph``, torch and numpy only.
"""
from .core import SkeletonData, valid_lengths
from .dataset import SkeletonDataset, make_loader, set_loader_epoch
from .synthetic import SyntheticSkeletons
from . import transforms
from .transforms import (Views, bone_scale, crop_resize, hierarchical_views, pstl_augment, random_flip,
                         random_rotate, reflect_pad_crop, resample, shear, slim_mirror, slim_rotate, to_bone,
                         to_motion)

__all__ = [
    "SkeletonData", "SkeletonDataset", "SyntheticSkeletons", "make_loader", "set_loader_epoch", "valid_lengths",
    "transforms", "Views", "bone_scale", "crop_resize", "hierarchical_views", "pstl_augment", "random_flip",
    "random_rotate", "reflect_pad_crop", "resample", "shear", "slim_mirror", "slim_rotate", "to_bone", "to_motion",
]
