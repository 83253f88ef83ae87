"""The training loop shared by every method.

Per iteration: the lr of the warmup + cosine schedule is set, the batch runs through
``method(x, lengths)`` (``labels=y`` too when ``method.uses_labels``) under bf16 autocast on CUDA,
``loss`` is back-propagated (scaled only for fp16), gradients are clipped if asked, the optimiser
steps and ``method.after_step(step, total_steps)`` runs if the method defines it.

- Optimiser and schedule come from ``method.config`` (``optimizer``, ``lr``, ``min_lr``,
  ``warmup_epochs``, ``weight_decay``, ``betas``, ``epochs``, ``batch_size``); no weight decay on
  1-D parameters and biases. ``batch_size`` is the *global* batch: under DDP each of the K ranks
  takes ``batch_size / K``.
- DDP when started by ``torchrun`` (``WORLD_SIZE > 1``): ``DistributedSampler`` sharding, model
  init from the common seed, per-rank RNG seeds ``seed + rank`` for augmentation/masking. Losses
  that need cross-rank statistics (Barlow Twins, Sinkhorn) reduce inside the method.
- Checkpoints (``<out>/last.pt``, the one before kept as ``previous.pt``; atomic) every
  ``checkpoint_every`` iterations and every ``checkpoint_every_epochs`` epochs and at the end, with
  model, optimiser, scheduler, scaler, epoch/iteration, the RNG state of every generator on every
  rank, the config and the fastskel version.
- Exact resume: the sampler order is a function of (seed, epoch), the loader is advanced to the
  saved batch without consuming RNG, then every RNG state is restored; on CPU an interrupted and
  resumed run ends with bit-identical weights to an uninterrupted one (tested).
- The hot path: every step runs inside :func:`train_step_context` (the ops' and transforms'
  data-dependent, host-synchronising checks skipped); a CUDA device is made current
  (``torch.cuda.set_device``) so Triton launches on it. Host reads happen only every ``log_every``
  iterations and at the end of an epoch (``tests/test_no_host_sync.py``).
- SIGTERM/SIGINT: a checkpoint is written at the next iteration boundary and :meth:`Trainer.fit`
  returns with ``interrupted`` set (the CLI exits 128 + signal). A second SIGINT aborts at once.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from . import distributed as D
from .checkpoint import (CheckpointError, find_generators, find_resume, load_checkpoint, resolve_resume, rng_state,
                         save_checkpoint, set_rng_state)
from .config import config_to_dict
from .logging import Progress, RunLogger
from .batches import batch_stream
from .schedule import WarmupCosine, build_optimizer

__all__ = ["TrainOptions", "TrainResult", "Trainer", "autocast_context", "train_step_context", "unwrap"]

AMP = ("auto", "bf16", "fp16", "none")


@dataclass
class TrainOptions:
    """Engine options (method hyper-parameters live in ``method.config``).

    Attributes:
        out: run directory (checkpoints, ``log.jsonl``); ``None`` writes nothing.
        device: "auto" (CUDA if available), "cpu", "cuda", "cuda:N".
        seed: model init and data order seed; rank r seeds its RNGs with ``seed + r``.
        workers: DataLoader worker processes.
        amp: "auto" = bf16 autocast on CUDA, off on CPU; "bf16", "fp16" (with grad scaling), "none".
        clip_grad: max global gradient norm (``None``: the method config's ``clip_grad`` if it has
            one, else no clipping).
        checkpoint_every: also checkpoint every N iterations (0: only per epoch/at the end).
        checkpoint_every_epochs: checkpoint every N epochs (and always after the last).
        log_every: iterations between log lines / progress updates (the loss is synced then).
        print_log: also print each log line (iteration, loss and parts, lr, samples/s) to stdout;
            ``fastskel pretrain --log-every N --no-progress`` sets it.
        tensorboard: write scalars to ``<out>/tb``: ``None`` when tensorboard is installed,
            ``True`` asked for (a one-line warning when it is missing), ``False`` never.
        drop_last: drop the incomplete last batch of each epoch (default: yes, as SSL recipes do).
        find_unused_parameters: passed to DDP (methods with branches unused in pretraining).
        handle_signals: install the SIGTERM/SIGINT handlers while training (main thread only).
        iters_per_epoch: iterations per epoch of the schedule (``None``: the method config's
            ``iters_per_epoch`` if it has one, else one pass over the data); the loader cycles
            through reshuffled passes (:func:`~fastskel.engine.batches.batch_stream`).
    """

    out: Optional[str] = None
    device: Optional[str] = "auto"
    seed: int = 0
    workers: int = 0
    amp: str = "auto"
    clip_grad: Optional[float] = None
    checkpoint_every: int = 0
    checkpoint_every_epochs: int = 1
    log_every: int = 10
    progress: bool = True
    print_log: bool = False
    tensorboard: Optional[bool] = None
    drop_last: bool = True
    find_unused_parameters: bool = False
    handle_signals: bool = True
    iters_per_epoch: Optional[int] = None

    def __post_init__(self) -> None:
        if self.amp not in AMP:
            raise ValueError(f"amp: expected one of {AMP}, got {self.amp!r}")
        for name in ("workers", "checkpoint_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name}: expected an int >= 0, got {v!r}")
        for name in ("checkpoint_every_epochs", "log_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
        if self.iters_per_epoch is not None and (isinstance(self.iters_per_epoch, bool)
                                                 or not isinstance(self.iters_per_epoch, int) or self.iters_per_epoch < 1):
            raise ValueError(f"iters_per_epoch: expected an int >= 1 or None, got {self.iters_per_epoch!r}")
        if self.clip_grad is not None and not (float(self.clip_grad) > 0):
            raise ValueError(f"clip_grad: expected a positive max norm or None, got {self.clip_grad!r}")


@dataclass
class TrainResult:
    iteration: int
    total_iterations: int
    epoch: int
    interrupted: bool = False
    signal: Optional[int] = None
    checkpoint: Optional[Path] = None
    history: List[Dict[str, float]] = field(default_factory=list)
    last_loss: Optional[float] = None


def _device_name(dev: torch.device) -> str:
    """``cpu (N threads)`` or ``cuda:i (<GPU name>)``: the device line of ``fastskel report``."""
    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    return f"{dev} ({torch.get_num_threads()} threads)"


def _versions() -> Dict[str, str]:
    import platform

    import fastskel

    return {"fastskel": fastskel.__version__, "torch": torch.__version__, "python": platform.python_version()}


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def autocast_context(device: torch.device, amp: str = "auto"):
    """bf16 autocast on CUDA for "auto"/"bf16", fp16 for "fp16"; a no-op on CPU."""
    if device.type != "cuda" or amp == "none":
        return contextlib.nullcontext()
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    return torch.autocast(device_type="cuda", dtype=dtype)


@contextlib.contextmanager
def train_step_context():
    """The engine's hot path: the data-dependent checks of ``fastskel.ops`` and ``fastskel.data``
    (value ranges, NaN scans: host reads that stall the GPU every step) are skipped, as the batches
    come from a dataset validated when it was loaded. Shape/dtype/device checks still run; the
    public ops keep every check outside this block."""
    from fastskel.data import skip_data_checks as skip_data
    from fastskel.ops import skip_data_checks as skip_ops

    with skip_ops(), skip_data():
        yield


class _SignalCatcher:
    """Records SIGTERM/SIGINT instead of dying; a second SIGINT raises KeyboardInterrupt."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signum: Optional[int] = None
        self._old: Dict[int, Any] = {}

    def _handler(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self):
        if self.enabled:
            for s in (signal.SIGTERM, signal.SIGINT):
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old.clear()
        return False


class Trainer:
    """Trains ``method`` on ``dataset`` (items ``(x, length, label)``) with ``method.config``.

    Args:
        method: an ``nn.Module`` following the method contract (``fastskel.methods``).
        dataset: a map-style dataset, ideally a :class:`fastskel.data.SkeletonDataset`.
        options: :class:`TrainOptions`.
        method_name: the registry name stored in checkpoints (``fastskel.methods.get_method``).
        extra: JSON-able facts stored in the checkpoint (e.g. the ``--data`` spec).
    """

    def __init__(self, method: nn.Module, dataset, options: Optional[TrainOptions] = None,
                 method_name: Optional[str] = None, extra: Optional[Dict[str, Any]] = None):
        self.options = options or TrainOptions()
        cfg = getattr(method, "config", None)
        if cfg is None or not dataclasses.is_dataclass(cfg):
            raise TypeError(f"method: expected a module with a dataclass .config, got {type(method).__name__}")
        missing = [k for k in ("epochs", "batch_size", "lr", "min_lr", "warmup_epochs", "weight_decay",
                               "optimizer", "betas") if not hasattr(cfg, k)]
        if missing:
            raise TypeError(f"method.config: {type(cfg).__name__} lacks the engine fields {missing}")
        self.method = method
        self.config = cfg
        self.dataset = dataset
        self.method_name = method_name or type(method).__name__.lower()
        self.extra = dict(extra or {})
        self.dist = D.init_distributed(self.options.device)
        self.device = self.dist.device
        if self.device.type == "cuda" and self.device.index is not None:
            torch.cuda.set_device(self.device)   # Triton launches on the current device, not the tensors'

    # ------------------------------------------------------------------ pieces
    def _per_rank_batch(self) -> int:
        bs, world = int(self.config.batch_size), self.dist.world_size
        if bs % world:
            raise ValueError(f"batch_size: the global batch {bs} must be divisible by the {world} ranks")
        per = bs // world
        n = len(self.dataset)
        if self.options.drop_last and n < bs:
            raise ValueError(f"batch_size: {bs} is larger than the dataset ({n} samples); "
                             f"lower --batch-size")
        return per

    def _make_loader(self, per_rank: int):
        from fastskel.data import make_loader

        return make_loader(self.dataset, per_rank, shuffle=True, seed=self.options.seed,
                           distributed=self.dist.distributed, drop_last=self.options.drop_last,
                           num_workers=self.options.workers, pin_memory=self.device.type == "cuda")

    def _state(self, model, optimizer, scheduler, scaler, epoch, iteration, total, ipe) -> Dict[str, Any]:
        import fastskel

        gens = find_generators(unwrap(model))
        rng = [rng_state(gens)]
        if self.dist.distributed:
            gathered: List[Any] = [None] * self.dist.world_size
            torch.distributed.all_gather_object(gathered, rng[0])
            rng = gathered
        return {
            "fastskel_version": fastskel.__version__,
            "method": self.method_name,
            "config": config_to_dict(self.config),
            "model": unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else {},
            "epoch": int(epoch),
            "iteration": int(iteration),
            "total_iterations": int(total),
            "iterations_per_epoch": int(ipe),
            "loader_batches": int(getattr(self, "_passes", ipe)),
            "world_size": int(self.dist.world_size),
            "rng": rng,
            "data": {"seed": int(self.options.seed), "num_samples": len(self.dataset),
                     "sample_shape": tuple(int(s) for s in self.dataset.x.shape[1:])
                     if hasattr(self.dataset, "x") else None,
                     "num_classes": int(getattr(self.dataset, "num_classes", 0) or 0)},
            "options": dataclasses.asdict(self.options),
            "extra": self.extra,
        }

    def _save(self, state_fn, path: Path) -> Optional[Path]:
        state = state_fn()  # every rank takes part (RNG gather), rank 0 writes
        if self.dist.rank == 0:
            save_checkpoint(state, path)
            return path
        return None

    # ------------------------------------------------------------------ loop
    def fit(self, resume: Optional[str] = None, stop_after: Optional[int] = None) -> TrainResult:
        """Train to ``config.epochs`` (or until a signal / ``stop_after`` iterations, after which a
        checkpoint is written as for a signal). ``resume``: a checkpoint file or run directory, or
        ``"auto"`` (the run folder's checkpoint when it has one, else a fresh start; also what a
        restarted ``torchrun`` worker does without ``resume``). A larger ``config.epochs`` than the
        checkpoint's extends the run: the warmup + cosine schedule is recomputed for the new total."""
        opt, cfg, dev = self.options, self.config, self.device
        main = self.dist.rank == 0
        out = Path(opt.out) if opt.out else None
        ckpt_path = out / "last.pt" if out else None

        model = self.method.to(dev)
        model.train()
        per_rank = self._per_rank_batch()
        loader = self._make_loader(per_rank)
        self._passes = len(loader)
        if self._passes == 0:
            raise ValueError(f"batch_size: no full batch of {per_rank} per rank in {len(self.dataset)} samples")
        ipe = opt.iters_per_epoch if opt.iters_per_epoch is not None else getattr(cfg, "iters_per_epoch", None)
        ipe = int(ipe) if ipe else self._passes
        epochs = int(cfg.epochs)
        total = epochs * ipe
        warmup = min(int(cfg.warmup_epochs) * ipe, max(total - 1, 0))
        optimizer = build_optimizer(model, cfg.optimizer, float(cfg.lr), float(cfg.weight_decay), cfg.betas)
        scheduler = WarmupCosine(optimizer, total, warmup, float(cfg.lr), float(cfg.min_lr),
                                 wd_end=getattr(cfg, "weight_decay_end", None))
        clip = opt.clip_grad if opt.clip_grad is not None else getattr(cfg, "clip_grad", None)
        clip = float(clip) if clip else None
        use_fp16 = opt.amp == "fp16" and dev.type == "cuda"
        scaler = torch.amp.GradScaler("cuda", enabled=use_fp16) if dev.type == "cuda" else None
        if self.dist.distributed:
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[dev.index] if dev.type == "cuda" else None,
                find_unused_parameters=opt.find_unused_parameters)

        start, pending_rng = 0, None
        if resume == "auto" or (resume is None and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0):
            resume = find_resume(out)  # "auto" / a restarted torchrun worker: the run folder's checkpoint, if any
        if resume:
            path = resolve_resume(resume)
            st = load_checkpoint(path, map_location="cpu")
            self._check_resume(st, path, total, ipe)
            unwrap(model).load_state_dict(st["model"])
            optimizer.load_state_dict(st["optimizer"])
            # extending a run (--epochs changed): the warmup + cosine schedule is recomputed for the
            # new total and continues from the saved iteration (the lr steps up where the run resumes)
            scheduler.load_state_dict({**st["scheduler"], "total_iters": total, "warmup_iters": warmup})
            if scaler is not None and st.get("scaler"):
                scaler.load_state_dict(st["scaler"])
            start = int(st["iteration"])
            rngs = st["rng"]
            pending_rng = rngs[self.dist.rank] if len(rngs) == self.dist.world_size else None
            if pending_rng is None:
                warnings.warn(f"resume: {path} was written by {len(rngs)} ranks, this run has "
                              f"{self.dist.world_size}; RNG streams restart from the seed (not bit-exact)")
                D.seed_everything(opt.seed + self.dist.rank)
        else:
            D.seed_everything(opt.seed + self.dist.rank)

        logger = RunLogger(out, enabled=main, tensorboard=opt.tensorboard)
        if main and start == 0:
            logger.log("config", method=self.method_name, config=config_to_dict(cfg),
                       options=dataclasses.asdict(opt), world_size=self.dist.world_size,
                       iterations_per_epoch=ipe, total_iterations=total, extra=self.extra,
                       device=_device_name(dev), versions=_versions())
        elif main:
            # the configured length may have changed (--resume DIR --epochs N extends): `fastskel report` reads it here
            logger.log("resume", step=start, checkpoint=str(resume), epochs=epochs, total_iterations=total,
                       iterations_per_epoch=ipe)

        base = unwrap(model)
        after_step = getattr(base, "after_step", None)
        uses_labels = bool(getattr(base, "uses_labels", False))
        gens = find_generators(base)
        result = TrainResult(iteration=start, total_iterations=total, epoch=start // ipe)
        step = start
        bar = Progress(total, initial=start, enabled=main and opt.progress, desc=self.method_name)
        win_t, win_n = time.perf_counter(), 0
        t0, n0 = win_t, start
        last_saved = None

        def state_fn(epoch_, step_):
            return lambda: self._state(model, optimizer, scheduler, scaler, epoch_, step_, total, ipe)

        def restore_rng():  # where the saved state was taken (before or after the pass's iter())
            if pending_rng is not None:
                set_rng_state(pending_rng, gens)

        try:
            with _SignalCatcher(opt.handle_signals) as sig, train_step_context():
                stream = batch_stream(loader, start, restore_rng)
                for epoch in range(start // ipe, epochs):
                    ep_loss, ep_n = torch.zeros((), device=dev), 0
                    for x, lengths, y in itertools.islice(stream, (epoch + 1) * ipe - step):
                        x = x.to(dev, non_blocking=True)
                        lengths = lengths.to(dev, non_blocking=True)
                        lr = scheduler.step()
                        with autocast_context(dev, opt.amp):
                            outs = model(x, lengths, labels=y.to(dev, non_blocking=True)) if uses_labels \
                                else model(x, lengths)
                        if not isinstance(outs, dict) or "loss" not in outs:
                            raise TypeError(f"method: forward must return a dict with key 'loss', got "
                                            f"{type(outs).__name__}")
                        loss = outs["loss"]
                        optimizer.zero_grad(set_to_none=True)
                        if scaler is not None and scaler.is_enabled():
                            scaler.scale(loss).backward()
                            if clip:
                                scaler.unscale_(optimizer)
                                nn.utils.clip_grad_norm_(model.parameters(), clip)
                            scaler.step(optimizer)
                            scaler.update()
                        else:
                            loss.backward()
                            if clip:
                                nn.utils.clip_grad_norm_(model.parameters(), clip)
                            optimizer.step()
                        step += 1
                        _test_kill_hook(step, self.dist.rank)
                        ep_loss += loss.detach().float()
                        ep_n += 1
                        if callable(after_step):
                            after_step(step, total)
                        win_n += x.shape[0] * self.dist.world_size

                        if step % opt.log_every == 0 or step == total:
                            rec = {k: float(D.all_reduce_mean(v.detach().float()).item())
                                   for k, v in outs.items() if isinstance(v, torch.Tensor) and v.numel() == 1}
                            if not math.isfinite(rec["loss"]):
                                raise FloatingPointError(
                                    f"loss is {rec['loss']} at iteration {step} (epoch {epoch}); "
                                    f"lower the lr or enable --clip-grad; last checkpoint: {last_saved}")
                            now = time.perf_counter()
                            sps = win_n / max(now - win_t, 1e-9)
                            win_t, win_n = now, 0
                            rec.update(lr=lr, samples_per_s=sps, epoch=epoch)
                            result.history.append({"step": step, **rec})
                            result.last_loss = rec["loss"]
                            if main:
                                logger.log("train", step=step, **rec)
                            bar.update_to(step, loss=rec["loss"], lr=lr, sps=f"{sps:.0f}")
                            if main and opt.print_log:
                                print(f"[fastskel] it {step}/{total} " + " ".join(
                                    f"{k} {v:.4g}" for k, v in rec.items() if k != "epoch"), flush=True)
                        stop_now = sig.signum is not None or (stop_after is not None and step >= stop_after)
                        if self.dist.distributed and opt.handle_signals:
                            stop_now = D.any_across_ranks(stop_now, dev)
                        if stop_now:
                            result.interrupted = True
                            result.signal = sig.signum
                            if ckpt_path is not None:
                                last_saved = self._save(state_fn(epoch, step), ckpt_path)
                                if main:
                                    logger.log("checkpoint", step=step, path=str(ckpt_path),
                                               reason=f"signal {sig.signum}" if sig.signum else "stop_after")
                            result.iteration, result.epoch, result.checkpoint = step, epoch, last_saved
                            bar.close()
                            if main:
                                why = signal.Signals(sig.signum).name if sig.signum else f"stop_after={stop_after}"
                                print(f"[fastskel] stopped at iteration {step}/{total} ({why}); "
                                      f"checkpoint: {last_saved}", flush=True)
                            return result
                        if ckpt_path is not None and opt.checkpoint_every and step % opt.checkpoint_every == 0 \
                                and step % ipe != 0:
                            last_saved = self._save(state_fn(epoch, step), ckpt_path)
                            if main:
                                logger.log("checkpoint", step=step, path=str(ckpt_path), epoch=epoch)
                    end_of_run = epoch + 1 == epochs
                    if ckpt_path is not None and (end_of_run or (epoch + 1) % opt.checkpoint_every_epochs == 0):
                        last_saved = self._save(state_fn(epoch + 1, step), ckpt_path)
                        if main:
                            logger.log("checkpoint", step=step, path=str(ckpt_path), epoch=epoch + 1)
                    mean_loss = float(D.all_reduce_mean(ep_loss).item()) / max(ep_n, 1)
                    if main:
                        logger.log("epoch", step=step, epoch=epoch + 1, loss=mean_loss)
                        if not opt.progress:
                            print(f"[fastskel] epoch {epoch + 1}/{epochs} mean loss {mean_loss:.4g} "
                                  f"({step}/{total} iterations)", flush=True)
        finally:
            bar.close()
            logger.close()
        el = time.perf_counter() - t0
        if main and step > n0:
            logger_msg = (f"[fastskel] {self.method_name}: {step - n0} iterations in {el:.1f}s, "
                          f"final loss {result.last_loss:.4g}" if result.last_loss is not None else "")
            if logger_msg:
                print(logger_msg, flush=True)
        result.iteration, result.epoch, result.checkpoint = step, epochs, last_saved
        return result

    def _check_resume(self, st: Dict[str, Any], path: Path, total: int, ipe: int) -> None:
        if st.get("method") != self.method_name:
            raise CheckpointError(f"checkpoint {path} is of method {st.get('method')!r}, "
                                  f"this run trains {self.method_name!r}")
        saved = st.get("config", {})
        now = config_to_dict(self.config)
        diff = {k: (saved.get(k), v) for k, v in now.items() if k in saved and saved.get(k) != v}
        diff.pop("epochs", None)  # more (or fewer, not below the saved iteration) epochs extend the run
        if diff:
            raise CheckpointError(f"checkpoint {path} was made with a different config "
                                  f"(field: (checkpoint, now)) {diff}; resume with the same --preset/--config/--set/"
                                  f"--batch-size (only --epochs may change, to extend the run), or start a new --out.")
        if int(st.get("loader_batches", getattr(self, "_passes", 0))) != getattr(self, "_passes", 0):
            raise CheckpointError(f"checkpoint {path} had {st.get('loader_batches')} batches per data pass, this run "
                                  f"{getattr(self, '_passes', 0)} (different data or batch size)")
        if int(st.get("iterations_per_epoch", ipe)) != ipe:
            raise CheckpointError(f"checkpoint {path} has {st.get('iterations_per_epoch')} iterations/epoch "
                                  f"and {st.get('total_iterations')} in all, this run {ipe} and {total} "
                                  f"(different data or batch size)")
        if int(st["iteration"]) > total:
            raise CheckpointError(f"checkpoint {path} is at iteration {st['iteration']}, beyond this run's "
                                  f"{total} ({int(self.config.epochs)} epochs); give --epochs of at least "
                                  f"{-(-int(st['iteration']) // ipe)} to continue it.")


def _test_kill_hook(step: int, rank: int) -> None:
    """Fault-injection for the restart test: ``FASTSKEL_TEST_KILL_AT_ITER=N`` SIGKILLs rank
    ``FASTSKEL_TEST_KILL_RANK`` (default 1) right after iteration N, in the first attempt only
    (``TORCHELASTIC_RESTART_COUNT`` 0), so a ``torchrun --max-restarts`` run restarts once."""
    at = os.environ.get("FASTSKEL_TEST_KILL_AT_ITER")
    if not at or step != int(at) or rank != int(os.environ.get("FASTSKEL_TEST_KILL_RANK", "1")):
        return
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) == 0:
        os.kill(os.getpid(), signal.SIGKILL)
