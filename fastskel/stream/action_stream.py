"""``ActionStream``: sliding-window action recognition over a live keypoint stream.

``push(keypoints, timestamp=None)`` takes one frame ``(M', V, C)`` (bodies × joints × channels, the
model's ``V`` and ``C``; ``(V, C)`` is one body) or ``None`` for a dropped frame. Once ``window``
frames are buffered, every ``stride``-th frame gives a :class:`Prediction` over the last
``window`` frames, preprocessed by :func:`~fastskel.stream.meta.preprocess_window` exactly as
``fastskel eval`` fed a clip.

Rules (all documented behaviour, tested in ``tests/test_stream.py``):

- **Missing frames** — ``None``, no body, or all-zero keypoints:
  ``"hold"`` repeats the last valid frame for up to ``max_gap`` consecutive missing frames, then
  zeros; ``"interpolate"`` fills a gap of at most ``max_gap`` frames linearly between the valid
  frames around it (``f = (1 − λ)·a + λ·b``, ``λ = i/(g+1)`` for the i-th of g missing frames; a
  body present on one side only is held from that side) — the gap's frames wait for the frame
  after it, so predictions covering them come up to ``max_gap`` frames late; a longer gap, and a
  gap still open when :meth:`flush` ends the stream, is zeros; ``"zero"`` keeps zeros (what a
  dataset holds for a frame without detection). Before the first valid frame, missing frames are
  zeros under every rule.
- **Bodies** — fewer than the model's ``M``: zero bodies appended (a dataset's padding); a body
  appearing mid-stream is zero in the frames before it; more than ``M``: the ``M`` the training
  data's reader keeps (``meta.preprocess["bodies"]["select"]``: highest summed score per frame,
  NTU's most active over the window, or the first ``M``).
- **Timestamps** — with ``fps`` and timestamps, frames are resampled onto the grid
  ``t_0 + k/fps`` by linear interpolation between the two samples around each grid time (bodies as
  in interpolation); samples further apart than ``(max_gap + 1)/fps`` leave the grid times between
  them missing (the ``missing`` rule, the new sample taking the last grid time ≤ its time);
  ``None`` frames with a timestamp are skipped (the resampling spans them). Timestamps must not
  decrease, and with ``fps`` either every frame has one or none (the first frame decides). Without ``fps`` every push is one frame and timestamps are only reported.
- **Smoothing** — ``smoothing=α`` reports ``p̄_k = α·p_k + (1 − α)·p̄_{k−1}`` (``p̄_0 = p_0``), an
  exponential moving average of the softmax probabilities over predictions; ``None``: raw.
- **Bad input** — wrong type, shape, ``V``, ``C``, NaN/inf or a decreasing timestamp: one
  ``ValueError``/``TypeError`` line naming what is wrong; the stream's state is unchanged.
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Deque, List, Optional, Tuple

import numpy as np

from .meta import StreamMeta, _preprocess

__all__ = ["ActionStream", "Prediction", "MISSING_RULES", "check_frame"]

MISSING_RULES = ("hold", "interpolate", "zero")


@dataclass
class Prediction:
    """One window's prediction. ``start``/``end``: first and last frame index of the window (frames
    counted from 0 after resampling); ``t_start``/``t_end`` their timestamps (None without any)."""

    index: int
    name: str
    probability: float
    probs: np.ndarray
    start: int
    end: int
    t_start: Optional[float] = None
    t_end: Optional[float] = None
    logits: Optional[np.ndarray] = field(default=None, repr=False)
    seconds: float = 0.0                        # preprocessing + model time of this window

    def to_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "t_start": self.t_start, "t_end": self.t_end,
                "class": self.index, "name": self.name, "probability": round(float(self.probability), 6)}


def check_frame(keypoints, meta: StreamMeta) -> Optional[np.ndarray]:
    """Validate one frame → float32 ``(M', V, C)``, or ``None`` when it is missing (None, no body,
    all zeros). Raises one-line ``TypeError``/``ValueError`` naming what is wrong."""
    if keypoints is None:
        return None
    if isinstance(keypoints, (str, bytes, dict)) or not hasattr(keypoints, "__len__") and not isinstance(keypoints, np.ndarray):
        raise TypeError(f"keypoints: expected an array (M, V={meta.V}, C={meta.C}) or None, got "
                        f"{type(keypoints).__name__}")
    try:
        a = np.asarray(keypoints, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError(f"keypoints: expected numbers in an (M, V={meta.V}, C={meta.C}) array, got a ragged or "
                         f"non-numeric {type(keypoints).__name__}") from None
    if a.size == 0:
        return None
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"keypoints: expected (M, V={meta.V}, C={meta.C}), got shape {a.shape}")
    if a.shape[1] != meta.V:
        raise ValueError(f"keypoints: expected V={meta.V} joints (the model's), got {a.shape[1]} (shape {a.shape})")
    if a.shape[2] != meta.C:
        raise ValueError(f"keypoints: expected C={meta.C} channels ({meta.channels}), got {a.shape[2]} "
                         f"(shape {a.shape})")
    if not np.isfinite(a).all():
        raise ValueError("keypoints: expected finite values, got NaN or inf")
    if not a.any():
        return None
    return a


def _pad_bodies(a: np.ndarray, m: int) -> np.ndarray:
    if a.shape[0] >= m:
        return a
    return np.concatenate([a, np.zeros((m - a.shape[0],) + a.shape[1:], np.float32)])


def lerp_frames(a: np.ndarray, b: np.ndarray, lam: float) -> np.ndarray:
    """``(1 − λ)·a + λ·b`` per body; a body present in one frame only is taken from that frame."""
    m = max(a.shape[0], b.shape[0])
    a, b = _pad_bodies(a, m), _pad_bodies(b, m)
    pa = a.reshape(m, -1).any(1)[:, None, None]
    pb = b.reshape(m, -1).any(1)[:, None, None]
    mix = ((1.0 - lam) * a + lam * b).astype(np.float32)
    return np.where(pa & pb, mix, np.where(pa, a, b)).astype(np.float32)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64) - z.max()
    e = np.exp(z)
    return (e / e.sum()).astype(np.float32)


class ActionStream:
    """Online recognition with ``model`` (a :class:`~fastskel.stream.model.StreamModel`).

    Args:
        model: has ``meta`` (:class:`StreamMeta`) and ``logits(x (1, C, T, V, M)) -> (1, K)``.
        window: frames per prediction (≥ 1; ≤ ``meta.T`` to match the offline clips exactly).
        stride: frames between predictions (≥ 1).
        missing: ``"hold"``, ``"interpolate"`` or ``"zero"`` (see the module docstring).
        max_gap: longest gap (frames) that ``hold``/``interpolate`` fill.
        smoothing: ``None`` or α in (0, 1]: exponential moving average of the probabilities.
        fps: nominal frame rate; with timestamps, frames are resampled to it.
    """

    def __init__(self, model, window: int, stride: int, missing: str = "hold", max_gap: int = 10,
                 smoothing: Optional[float] = None, fps: Optional[float] = None):
        meta = getattr(model, "meta", None)
        if not isinstance(meta, StreamMeta) or not callable(getattr(model, "logits", None)):
            raise TypeError(f"model: expected a StreamModel (meta: StreamMeta, logits(x)), got {type(model).__name__}")
        for name, v in (("window", window), ("stride", stride)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
        if missing not in MISSING_RULES:
            raise ValueError(f"missing: expected one of {list(MISSING_RULES)}, got {missing!r}")
        if isinstance(max_gap, bool) or not isinstance(max_gap, int) or max_gap < 0:
            raise ValueError(f"max_gap: expected an int >= 0, got {max_gap!r}")
        if smoothing is not None and not (isinstance(smoothing, (int, float)) and 0.0 < float(smoothing) <= 1.0):
            raise ValueError(f"smoothing: expected None or a value in (0, 1], got {smoothing!r}")
        if fps is not None and not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps: expected a positive number or None, got {fps!r}")
        self.model, self.meta = model, meta
        self.window, self.stride, self.missing, self.max_gap = window, stride, missing, max_gap
        self.smoothing = None if smoothing is None else float(smoothing)
        self.fps = None if fps is None else float(fps)
        self.reset()

    def reset(self) -> None:
        self._frames: Deque[Tuple[np.ndarray, Optional[float]]] = deque(maxlen=self.window)
        self._count = 0                          # frames finalised so far
        self._last: Optional[np.ndarray] = None  # last valid frame
        self._gap = 0                            # consecutive missing frames (hold)
        self._pending: List[Optional[float]] = []  # missing frames waiting for interpolation
        self._ready: Deque[Prediction] = deque()
        self._smooth: Optional[np.ndarray] = None
        self._t_last: Optional[float] = None     # last timestamp seen
        self._sample: Optional[Tuple[float, np.ndarray]] = None  # last valid (t, frame) for resampling
        self._grid_next: Optional[int] = None    # next grid index to emit
        self._t0: Optional[float] = None
        self.frames_in = 0
        self._timed: Optional[bool] = None       # whether frames carry timestamps (decided by the first)

    @property
    def frames_done(self) -> int:
        """Frames finalised (resampled, gap-filled) so far."""
        return self._count

    # ------------------------------------------------------------------ input
    def push(self, keypoints, timestamp: Optional[float] = None) -> Optional[Prediction]:
        """Add one frame; returns the oldest prediction not yet returned, or ``None``."""
        frame = check_frame(keypoints, self.meta)
        t = self._check_time(timestamp)
        if self.fps is not None and self.frames_in:
            if (t is None) != (self._timed is False):
                raise ValueError(f"timestamp: expected {'a time' if self._timed else 'no time'} for every frame "
                                 f"like the first (resampling to fps={self.fps:g}), got {timestamp!r}")
        self._timed = t is not None if not self.frames_in else self._timed
        self.frames_in += 1
        if t is not None:
            self._t_last = t
        if self.fps is not None and t is not None:
            self._resample(frame, t)
        else:
            self._add(frame, t if t is not None else self._grid_time(self._count + len(self._pending)))
        return self._ready.popleft() if self._ready else None

    def flush(self) -> List[Prediction]:
        """End of the stream: frames still waiting for interpolation become zeros; every prediction
        not yet returned."""
        for t in self._pending:
            self._finalise(np.zeros((1, self.meta.V, self.meta.C), np.float32), t)
        self._pending = []
        out = list(self._ready)
        self._ready.clear()
        return out

    def _check_time(self, timestamp) -> Optional[float]:
        if timestamp is None:
            return None
        if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float, np.integer, np.floating)):
            raise TypeError(f"timestamp: expected a number (seconds) or None, got {type(timestamp).__name__}")
        t = float(timestamp)
        if not math.isfinite(t):
            raise ValueError(f"timestamp: expected a finite number, got {timestamp!r}")
        if self._t_last is not None and t < self._t_last:
            raise ValueError(f"timestamp: expected non-decreasing times, got {t} after {self._t_last}")
        return t

    def _grid_time(self, k: int) -> Optional[float]:
        if self.fps is None:
            return None
        return (self._t0 or 0.0) + k / self.fps

    def _resample(self, frame: Optional[np.ndarray], t: float) -> None:
        if frame is None:                        # spanned by the resampling of the valid samples
            return
        dt = 1.0 / self.fps
        if self._sample is None:
            self._t0, self._grid_next = t, 0
            self._sample = (t, frame)
            self._add(frame, t)
            self._grid_next = 1
            return
        tp, fp = self._sample
        span = t - tp
        ks = []
        while self._t0 + self._grid_next * dt <= t + 1e-9:
            ks.append(self._grid_next)
            self._grid_next += 1
        for i, k in enumerate(ks):
            g = self._t0 + k * dt
            if span <= (self.max_gap + 1) * dt + 1e-9:
                lam = 1.0 if span <= 0 else min(max((g - tp) / span, 0.0), 1.0)
                self._add(lerp_frames(fp, frame, lam), g)
            else:
                self._add(frame if i == len(ks) - 1 else None, g)
        self._sample = (t, frame)

    def _add(self, frame: Optional[np.ndarray], t: Optional[float]) -> None:
        if frame is not None:
            if self._pending:
                g = len(self._pending)
                fill = self._last is not None and g <= self.max_gap
                for i, tp in enumerate(self._pending, 1):
                    self._finalise(lerp_frames(self._last, frame, i / (g + 1)) if fill else None, tp)
                self._pending = []
            self._last, self._gap = frame, 0
            self._finalise(frame, t)
            return
        self._gap += 1
        if self.missing == "interpolate" and self._last is not None:
            if self._pending or self._gap <= self.max_gap:
                self._pending.append(t)
                if len(self._pending) > self.max_gap:           # the gap is too long: zeros
                    for tp in self._pending:
                        self._finalise(None, tp)
                    self._pending = []
                return
            self._finalise(None, t)
            return
        if self.missing == "hold" and self._last is not None and self._gap <= self.max_gap:
            self._finalise(self._last, t)
        else:
            self._finalise(None, t)

    def _finalise(self, frame: Optional[np.ndarray], t: Optional[float]) -> None:
        if frame is None:
            frame = np.zeros((1, self.meta.V, self.meta.C), np.float32)
        self._frames.append((frame, t))
        self._count += 1
        if self._count >= self.window and (self._count - self.window) % self.stride == 0:
            self._ready.append(self._predict())

    # ------------------------------------------------------------------ model
    def window_array(self) -> np.ndarray:
        """The buffered frames ``(W, M', V, C)`` (bodies zero-padded to the most in any frame)."""
        m = max(1, max(f.shape[0] for f, _ in self._frames))
        return np.stack([_pad_bodies(f, m) for f, _ in self._frames])

    def _predict(self) -> Prediction:
        t0 = time.perf_counter()
        x = _preprocess(self.window_array(), self.meta)     # every frame was checked by push
        z = np.asarray(self.model.logits(x), dtype=np.float32).reshape(-1)
        p = _softmax(z)
        if self.smoothing is not None:
            self._smooth = p if self._smooth is None else (self.smoothing * p + (1 - self.smoothing) * self._smooth)
            p = self._smooth.astype(np.float32)
        k = int(p.argmax())
        end = self._count - 1
        ts = [t for _, t in self._frames]
        return Prediction(index=k, name=self.meta.class_name(k), probability=float(p[k]), probs=p,
                          start=end - len(self._frames) + 1, end=end, t_start=ts[0], t_end=ts[-1], logits=z,
                          seconds=time.perf_counter() - t0)
