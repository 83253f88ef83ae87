"""Channel layouts of skeleton tensors and what the pose-estimator score is used for.

A tensor ``(N, C, T, V[, M])`` holds one of three layouts:

- ``"xyz"`` (C = 3): 3-D joints (motion capture, Kinect); geometric augmentations are 3-D.
- ``"xy"`` (C = 2): 2-D image keypoints; rotations/shear/flip act in the image plane.
- ``"xy+score"`` (C = 3): 2-D keypoints and the detector's confidence as channel 2 (PYSKL /
  mmaction2 / st-gcn Kinetics keep it as a channel). Geometric augmentations act on (x, y) only;
  the score is carried through unchanged. Cannot be inferred from C (C = 3 reads as ``"xyz"``): the
  data (``meta["channels"]``) or a ``channels:`` setting declares it.

:func:`resolve_channels` fills an undeclared layout from C (3 → xyz, 2 → xy) and refuses a
contradiction with one line. :func:`apply_score` turns ``"xy+score"`` data into what the ``score``
option asks for (``channel`` | ``weight`` | ``ignore``), never dropping a score silently.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

__all__ = ["CHANNELS", "SCORE_MODES", "apply_score", "channel_count", "resolve_channels", "spatial_dims"]

CHANNELS = ("xyz", "xy", "xy+score")
_C = {"xyz": 3, "xy": 2, "xy+score": 3}
SCORE_MODES = ("channel", "weight", "ignore")


def channel_count(channels: str) -> int:
    """C of a layout name."""
    return _C[channels]


def resolve_channels(channels: Optional[str], C: int, where: str = "channels") -> str:
    """The layout of data with ``C`` channels: ``channels`` itself when it fits C, else (``None`` or
    ``""``) inferred from C — 3 → ``"xyz"``, 2 → ``"xy"``, any other C → ``""`` (no known layout;
    geometric augmentations then refuse it). A layout that contradicts C is a ``ValueError``."""
    if isinstance(C, bool) or not isinstance(C, int):
        raise TypeError(f"{where}: expected an int channel count C, got {type(C).__name__}")
    if channels is None or channels == "":
        return {3: "xyz", 2: "xy"}.get(C, "")
    if not isinstance(channels, str) or channels not in CHANNELS:
        raise ValueError(f"{where}: expected one of {list(CHANNELS)}, got {channels!r}")
    if _C[channels] != C:
        raise ValueError(f"{where}: {channels!r} needs C={_C[channels]} channels, but the data has C={C}")
    return channels


def spatial_dims(x: torch.Tensor, channels: Optional[str] = None, name: str = "x") -> int:
    """Number of leading spatial channels of ``x`` ``(N, C, ...)`` (3 for ``"xyz"``, 2 for ``"xy"``
    and ``"xy+score"``); ``ValueError`` for a C without a geometric layout."""
    layout = resolve_channels(channels, int(x.shape[1]), where="channels")
    if not layout:
        raise ValueError(f"{name}: geometric augmentations need C=3 (xyz, xy+score) or C=2 (xy) channels, "
                         f"got C={x.shape[1]}; declare channels= one of {list(CHANNELS)}")
    return 3 if layout == "xyz" else 2


def apply_score(x: torch.Tensor, channels: str, score: str = "channel", threshold: float = 0.0
                ) -> Tuple[torch.Tensor, str]:
    """``(x', channels')`` for the ``score`` option on ``x`` ``(N, C, T, V[, M])``:

    - ``"channel"``: unchanged (``"xy+score"`` stays C = 3, the PYSKL/mmaction2 convention);
    - ``"weight"``: the score becomes a 0/1 joint weight on the coordinates,
      ``(x, y) ← (x, y)·1[score > threshold]`` (C = 2, ``"xy"``); with ``threshold=0`` this is the
      st-gcn Kinetics feeder's rule (a joint with score 0 is missing: its coordinates are zeroed);
    - ``"ignore"``: the score channel is dropped (C = 2), an explicit choice.

    ``"weight"``/``"ignore"`` on data without a score (``channels`` not ``"xy+score"``) is a
    ``ValueError`` (nothing to use or drop).
    """
    if score not in SCORE_MODES:
        raise ValueError(f"score: expected one of {list(SCORE_MODES)}, got {score!r}")
    if score == "channel":
        return x, channels
    if channels != "xy+score":
        raise ValueError(f"score={score!r}: the data has no score channel (channels {channels or 'unknown'!r}); "
                         "declare channels=xy+score or use score=channel")
    xy = x[:, :2]
    if score == "weight":
        xy = xy * (x[:, 2:3] > float(threshold)).to(x.dtype)
    return xy.contiguous(), "xy"
