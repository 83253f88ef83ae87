"""Public functional ops (docs/design.md §4). Each validates its arguments, then dispatches to a Triton
kernel (``fastskel.kernels``), the ``fastskel._C`` extension or the reference in
:mod:`fastskel.ops.reference`, by ``backend=`` or the process default (:mod:`fastskel.backend`)."""
from . import reference
from ._checks import data_checks_enabled, skip_data_checks
from .attention import attention
from .barlow import barlow_twins_loss
from .dropout import dropout_add_relu
from .focal import focal_reconstruction_loss, motion_energy_weights
from .graph_conv import graph_conv
from .joint_mask import degree_joint_mask
from .motion import frame_motion, motion_frame_mask
from .patch import patchify, unpatchify
from .prototype import SinkhornTargets, prototype_cross_entropy, sinkhorn_knopp
from .reference import Rope

__all__ = [
    "Rope", "SinkhornTargets", "attention", "data_checks_enabled", "skip_data_checks", "barlow_twins_loss", "degree_joint_mask", "dropout_add_relu", "focal_reconstruction_loss",
    "frame_motion", "graph_conv", "motion_energy_weights", "motion_frame_mask", "patchify",
    "prototype_cross_entropy", "reference", "sinkhorn_knopp", "unpatchify",
]
