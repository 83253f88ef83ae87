"""FLOPs of one forward pass, counted from the layers that actually run (forward hooks).

Conventions:

- ``"paper"``: the convention of the skeleton-MAE papers (MAMP, AMR Table 1): ``2 × MACs`` of
  ``nn.Linear`` and ``nn.Conv1d/2d/3d`` only — no biases, norms, activations, softmax, nor the
  attention matmuls. For one action with both bodies this gives MAMP-5 = 13.7 G and AMR = 3.8 G.
- ``"full"``: the paper count plus the two attention matmuls of every
  :class:`~fastskel.nn.MultiheadAttention` / :class:`~fastskel.nn.MultiheadCrossAttention`:
  ``q·kᵀ`` and ``p·v``, ``2·B·H·Lq·Lk·d`` each, i.e. ``4·B·Lq·Lk·dim`` (dense: key padding is not
  subtracted).

SLiM (seed 002) reports 3.59 GFLOPs for inference, without saying how it counts. The official
encoder (SwiGLU 688, 205 tokens per body: cls + 4 registers + 8·25 patches of a 64-frame clip) on
one action gives 5.19 G with both bodies / 2.60 G with one under ``"paper"`` (2 × MACs of the
Linear layers and the patch embedding), and 5.88 G / 2.94 G under ``"full"`` (+ the attention
matmuls); neither is 3.59 G (that needs ~130 tokens per body, or another convention). SwiGLU's
SiLU·gate product, LayerNorms and softmax are not counted in either. Pinned in tests/test_flops.py.

Counting is by what executes: a Linear applied to a batch-1 tensor that is broadcast later (AMR's
shared decoder queries) counts once, not once per sample. Calls to ``torch.nn.functional``
outside modules are not seen.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import torch
from torch import nn

__all__ = ["CONVENTIONS", "count_flops", "flop_breakdown"]

CONVENTIONS = ("paper", "full")
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _linear_flops(m: nn.Linear, out: torch.Tensor) -> int:
    rows = out.numel() // m.out_features
    return 2 * rows * m.in_features * m.out_features


def _conv_flops(m: nn.Module, out: torch.Tensor) -> int:
    k = 1
    for s in m.kernel_size:
        k *= s
    return 2 * out.numel() * (m.in_channels // m.groups) * k


def _attention_flops(m: nn.Module, args: tuple, kwargs: dict) -> int:
    from fastskel.nn.attention import MultiheadCrossAttention

    if isinstance(m, MultiheadCrossAttention):
        query = args[0] if args else kwargs["query"]
        context = args[1] if len(args) > 1 else kwargs["context"]
        b, lq, lk = context.shape[0], query.shape[1], context.shape[1]
        dim = m.q.out_features
    else:
        x = args[0] if args else kwargs["x"]
        b, lq, dim = x.shape
        lk = lq
    return 4 * b * lq * lk * dim


def _run(model: nn.Module, inputs, kwargs: Optional[Mapping[str, Any]], convention: str,
         method: str) -> Dict[str, int]:
    if convention not in CONVENTIONS:
        raise ValueError(f"convention: expected one of {CONVENTIONS}, got {convention!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    fn = getattr(model, method, None)
    if not callable(fn):
        raise ValueError(f"method: expected the name of a method of {type(model).__name__}, got {method!r}")
    if method == "forward":
        fn = model                        # through __call__, so hooks on the root module fire too
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    elif not isinstance(inputs, Sequence):
        raise TypeError(f"inputs: expected a tensor or a tuple of positional inputs, got {type(inputs).__name__}")
    from fastskel.nn.attention import MultiheadAttention, MultiheadCrossAttention

    counts: Dict[str, int] = defaultdict(int)
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(
                lambda mod, a, out, name=name: counts.__setitem__(name, counts[name] + _linear_flops(mod, out))))
        elif isinstance(m, _CONV):
            handles.append(m.register_forward_hook(
                lambda mod, a, out, name=name: counts.__setitem__(name, counts[name] + _conv_flops(mod, out))))
        elif convention == "full" and isinstance(m, (MultiheadAttention, MultiheadCrossAttention)):
            key = f"{name}.attention" if name else "attention"
            handles.append(m.register_forward_hook(
                lambda mod, a, kw, out, key=key: counts.__setitem__(key, counts[key] + _attention_flops(mod, a, kw)),
                with_kwargs=True))
    try:
        with torch.no_grad():
            fn(*inputs, **dict(kwargs or {}))
    finally:
        for h in handles:
            h.remove()
    return dict(counts)


def flop_breakdown(model: nn.Module, inputs: Union[torch.Tensor, Sequence[Any]],
                   convention: str = "paper", kwargs: Optional[Mapping[str, Any]] = None,
                   method: str = "forward") -> Dict[str, int]:
    """FLOPs per module name (attention matmuls under ``"<module>.attention"`` in "full")."""
    return _run(model, inputs, kwargs, convention, method)


def count_flops(model: nn.Module, inputs: Union[torch.Tensor, Sequence[Any]], convention: str = "paper",
                kwargs: Optional[Mapping[str, Any]] = None, method: str = "forward") -> int:
    """Total FLOPs of ``model.<method>(*inputs, **kwargs)`` under ``torch.no_grad``.

    Args:
        model: any ``nn.Module`` (e.g. ``AMR(AMRConfig())``).
        inputs: a tensor or a tuple of positional inputs (e.g. one action ``(1, 3, T, 25, 2)``).
        convention: "paper" (2 × MACs of Linear/Conv) or "full" (+ attention matmuls).
        kwargs: keyword inputs; method: which method to run ("forward", "encode", ...).
    """
    return sum(_run(model, inputs, kwargs, convention, method).values())
