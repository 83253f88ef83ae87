"""Atomic checkpoints and the RNG state of every generator.

A checkpoint is a ``dict`` saved with :func:`torch.save` and read back with ``weights_only=True``
(plain containers, numbers, strings and tensors only: no pickled code runs on load). Writing is
atomic: the bytes go to a temporary file in the same directory, are flushed and ``fsync``-ed, the
current file (if any) becomes the *previous* one (a hard link renamed over it, so the current file
never disappears), and the temporary file is renamed into place (``os.replace``). A crash or
SIGKILL at any point of a save therefore never destroys the last good checkpoint, and the one
before it is kept too (``last.pt`` + ``previous.pt``; tested by killing a writer at random times).
"""
from __future__ import annotations

import os
import random
import warnings
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import numpy as np
import torch

__all__ = ["CheckpointError", "FORMAT", "save_checkpoint", "load_checkpoint", "previous_path",
           "rng_state", "set_rng_state", "find_generators", "resolve_resume", "find_resume"]

FORMAT = "fastskel-checkpoint-v1"
PathLike = Union[str, os.PathLike]


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used (corrupt, truncated, not a fastskel checkpoint, or
    incompatible with this run). The message names the file."""


def previous_path(path: PathLike) -> Path:
    """Where the checkpoint replaced by a new save of ``path`` is kept: ``last.pt`` → ``previous.pt``,
    ``x.pt`` → ``x.prev.pt``."""
    p = Path(path)
    if p.name == "last.pt":
        return p.with_name("previous.pt")
    return p.with_name(p.stem + ".prev" + p.suffix)


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(str(d), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(state: Mapping[str, Any], path: PathLike, keep_previous: bool = True) -> Path:
    """Write ``state`` to ``path`` atomically (temp file in the same dir + fsync + ``os.replace``);
    the file it replaces is kept as :func:`previous_path` when ``keep_previous``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = dict(state)
    state.setdefault("format", FORMAT)
    _remove_stale_temps(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.exists():
            _rotate(path, previous_path(path))
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def _rotate(path: Path, prev: Path) -> None:
    """Make ``prev`` the current ``path`` while ``path`` stays in place: a hard link renamed over
    ``prev`` (atomic), so at every instant of a save a complete ``path`` exists (a process killed
    between the two renames leaves ``path`` = the old state, ``prev`` = the old state too). Where
    hard links are not supported, ``path`` itself is renamed (``resolve_resume`` then falls back to
    ``prev`` if the process dies before the new file is renamed into place)."""
    try:
        if prev.exists() and os.path.samefile(path, prev):
            return  # already one file (a save killed after this step): rename would be a no-op
    except OSError:
        pass
    link = prev.with_name(f".{prev.name}.tmp-{os.getpid()}")
    try:
        if link.exists():
            link.unlink()
        os.link(path, link)
    except OSError:
        os.replace(path, prev)
        return
    os.replace(link, prev)


def _remove_stale_temps(path: Path) -> None:
    """Delete ``.<name>.tmp-<pid>`` files left by writers that were killed mid-save (their process
    is gone); a live writer's temp file is left alone."""
    for pattern in (f".{path.name}.tmp-*", f".{previous_path(path).name}.tmp-*"):
        for t in path.parent.glob(pattern):
            pid = t.name.rsplit("-", 1)[-1]
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                try:
                    t.unlink()
                except OSError:
                    pass
            except OSError:  # exists but not ours (EPERM): leave it
                pass


def load_checkpoint(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> Dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises ``FileNotFoundError`` (naming the file) if it does not exist and :class:`CheckpointError`
    if it is truncated, corrupt or not a fastskel checkpoint; the message names the file and, when
    one exists, the previous checkpoint to fall back to.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint: expected a file, got the directory {path} "
                              f"(did you mean {path / 'last.pt'}?)")
    if not path.exists():
        raise FileNotFoundError(f"checkpoint: no such file: {path}")
    prev = previous_path(path)
    hint = f" The previous checkpoint {prev} exists and can be used instead." if prev.exists() else ""
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes; an interrupted copy?).{hint}")
    try:
        with warnings.catch_warnings():  # torch's "weights_only Unpickler might not support…" aside
            warnings.filterwarnings("ignore", message=".*pickle protocol.*")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # zip/pickle/EOF errors of a truncated or corrupt file
        # torch's own message is long and advises weights_only=False (running pickled code from the
        # file): it is kept only as the exception's __cause__, never in the sentence shown
        if "weights_only" in str(e) or "Weights only load failed" in str(e):
            why = ("it holds Python objects other than tensors, numbers, strings and containers, so it "
                   "is not a fastskel checkpoint (fastskel never runs code stored in a checkpoint)")
        else:
            why = f"it is corrupt or truncated ({type(e).__name__} while reading it)"
        raise CheckpointError(f"checkpoint {path} cannot be loaded: {why}.{hint}") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"checkpoint {path} is not a fastskel checkpoint "
                              f"(expected format {FORMAT!r}, got {got!r}).{hint}")
    import fastskel

    v = state.get("fastskel_version")
    if v is not None and v != fastskel.__version__:
        warnings.warn(f"checkpoint {path} was written by fastskel {v}, this is {fastskel.__version__}",
                      stacklevel=2)
    return state


def resolve_resume(resume: PathLike) -> Path:
    """``--resume`` accepts a checkpoint file or a run directory (→ its ``last.pt``).

    When the chosen file cannot be loaded (corrupt or truncated: a crash of the machine while it
    was written, a bad copy) and its previous checkpoint (``previous.pt``) loads, that one is used
    with a warning naming both files."""
    p = Path(resume)
    if p.is_dir():
        last = p / "last.pt"
        prev = p / "previous.pt"
        if not last.exists():
            if prev.exists():
                warnings.warn(f"{last} is missing (interrupted save?); resuming from {prev}", stacklevel=2)
                return prev
            raise FileNotFoundError(f"resume: no checkpoint (last.pt / previous.pt) in directory {p}")
        p = last
    if not p.exists():
        raise FileNotFoundError(f"resume: no such checkpoint file: {p}")
    try:
        load_checkpoint(p)
    except CheckpointError as e:
        prev = previous_path(p)
        if not prev.exists():
            raise
        try:
            load_checkpoint(prev)
        except CheckpointError:
            raise e from None
        warnings.warn(f"{p} cannot be loaded ({str(e).split(': ', 1)[-1].split('.')[0]}); "
                      f"resuming from the previous checkpoint {prev}", stacklevel=2)
        return prev
    return p


def find_resume(out: Optional[PathLike]) -> Optional[Path]:
    """``--resume auto``: the run folder ``out``'s checkpoint when it holds one, else ``None`` (a
    fresh start). A restarted ``torchrun`` worker (``TORCHELASTIC_RESTART_COUNT`` > 0) resumes this
    way without being asked."""
    if out is None:
        return None
    d = Path(out)
    if (d / "last.pt").exists() or (d / "previous.pt").exists():
        return d
    return None


# ---------------------------------------------------------------------------------------------
# RNG state of every generator


def find_generators(module: torch.nn.Module) -> Dict[str, torch.Generator]:
    """``torch.Generator`` attributes of ``module`` and its submodules, by dotted name (methods may
    keep their own generators for masking/augmentation; they are checkpointed with the run)."""
    out: Dict[str, torch.Generator] = {}
    for mname, m in module.named_modules():
        for k, v in vars(m).items():
            if isinstance(v, torch.Generator):
                out[f"{mname}.{k}" if mname else k] = v
    return out


def rng_state(generators: Optional[Mapping[str, torch.Generator]] = None) -> Dict[str, Any]:
    """Snapshot of python ``random``, numpy, torch CPU, every CUDA device and named generators."""
    np_state = np.random.get_state()
    st: Dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"name": str(np_state[0]), "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generators": {k: g.get_state() for k, g in (generators or {}).items()},
    }
    return st


def set_rng_state(state: Mapping[str, Any], generators: Optional[Mapping[str, torch.Generator]] = None) -> None:
    """Restore a snapshot from :func:`rng_state` (CUDA states only where devices exist)."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        k = min(len(cuda), torch.cuda.device_count())
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda[:k]])
    saved = state.get("generators", {}) or {}
    for k, g in (generators or {}).items():
        if k in saved:
            g.set_state(saved[k].cpu())
