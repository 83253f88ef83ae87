"""Run logs: JSON lines (always), TensorBoard (when installed), and the tqdm progress bar.

Only rank 0 writes. ``log.jsonl`` holds one JSON object per line with an ``"event"`` key
(``"config"``, ``"train"``, ``"epoch"``, ``"checkpoint"``, ``"eval"``, ...) and a wall-clock
``"time"``; it is appended to on ``--resume``.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

__all__ = ["RunLogger", "Progress", "to_jsonable"]


def to_jsonable(v: Any) -> Any:
    """Numbers, strings, tensors (scalars → float), tuples/lists/dicts, recursively."""
    try:
        import torch

        if isinstance(v, torch.Tensor):
            return v.item() if v.numel() == 1 else v.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {str(k): to_jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [to_jsonable(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return repr(v)


def _summary_writer():
    """``torch.utils.tensorboard.SummaryWriter``, or ``None`` when the tensorboard package is missing."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter


class RunLogger:
    """Appends events to ``<out>/log.jsonl`` and scalars (``<event>/<key>`` at each step) to
    TensorBoard event files in ``<out>/tb``. ``tensorboard``: ``None`` = when the tensorboard
    package is installed, ``True`` = asked for (a one-line warning when it is missing), ``False`` =
    never. ``out=None`` or ``enabled=False`` logs nothing."""

    def __init__(self, out: Optional[Path], enabled: bool = True, tensorboard: Optional[bool] = None,
                 filename: str = "log.jsonl"):
        self.enabled = enabled and out is not None
        self.path = Path(out) / filename if self.enabled else None
        self._tb = None
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if tensorboard or tensorboard is None:
                writer = _summary_writer()
                if writer is not None:
                    self._tb = writer(str(Path(out) / "tb"))
                elif tensorboard:
                    print("[fastskel] warning: TensorBoard logging was asked for but the tensorboard package "
                          "is not installed (pip install tensorboard); logging to log.jsonl only",
                          file=sys.stderr, flush=True)

    def log(self, event: str, step: Optional[int] = None, **fields: Any) -> None:
        if not self.enabled:
            return
        rec = {"event": event, "time": round(time.time(), 3)}
        if step is not None:
            rec["step"] = int(step)
        rec.update({k: to_jsonable(v) for k, v in fields.items()})
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if self._tb is not None and step is not None:
            for k, v in rec.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("time", "step"):
                    self._tb.add_scalar(f"{event}/{k}", v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


class Progress:
    """A tqdm bar over iterations (loss, lr, samples/s; tqdm itself shows the ETA), or nothing
    when disabled (non-zero ranks, ``--no-progress``) or tqdm is missing."""

    def __init__(self, total: int, initial: int = 0, enabled: bool = True, desc: str = "train"):
        self.bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True,
                                file=sys.stderr, unit="it", leave=True)
            except ImportError:
                self.bar = None

    def update(self, n: int = 1, **postfix: Any) -> None:
        if self.bar is None:
            return
        if postfix:
            self.bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in postfix.items()},
                                 refresh=False)
        self.bar.update(n)

    def update_to(self, n: int, **postfix: Any) -> None:
        """Move the bar to position ``n`` (absolute), with a new postfix."""
        if self.bar is not None:
            self.update(max(0, n - int(self.bar.n)), **postfix)

    def write(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.write(msg)
        else:
            print(msg, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def format_metrics(d: Dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in d.items())
