"""Skeleton data: format readers, the synthetic default dataset, batched transforms, datasets.

Layout ``x (N, C, T, V, M)`` float32 + ``lengths`` + ``y`` (docs/design.md §2, §6). ``fastskel.data`` stands
alone: it depends on ``fastskel.graph``, torch and numpy only.
"""
from .core import SkeletonData, valid_lengths
from ._checks import skip_data_checks
from .dataset import SkeletonDataset, make_loader, set_loader_epoch
from .synthetic import SyntheticSkeletons
from .ntu import NTUFormatError, parse_ntu_name, read_ntu_skeleton, read_ntu_skeletons
from .formats import load, read_ctrgcn_npz, read_pku_mmd, read_pyskl, read_stgcn_npy, write_ctrgcn_npz
from . import transforms
from .transforms import (Views, bone_scale, crop_resize, hierarchical_views, pstl_augment, random_flip,
                         random_rotate, reflect_pad_crop, resample, shear, slim_mirror, slim_rotate, to_bone,
                         to_motion)

__all__ = [
    "SkeletonData", "SkeletonDataset", "SyntheticSkeletons", "make_loader", "set_loader_epoch", "valid_lengths",
    "skip_data_checks",
    "NTUFormatError", "load", "parse_ntu_name", "read_ctrgcn_npz", "read_ntu_skeleton", "read_ntu_skeletons",
    "read_pku_mmd", "read_pyskl", "read_stgcn_npy", "write_ctrgcn_npz",
    "transforms", "Views", "bone_scale", "crop_resize", "hierarchical_views", "pstl_augment", "random_flip",
    "random_rotate", "reflect_pad_crop", "resample", "shear", "slim_mirror", "slim_rotate", "to_bone", "to_motion",
]
