"""st-gcn's block tail ``ReLU(Dropout(x) + residual)`` as one registered op,
``torch.ops.fastskel.dropout_add_relu``.

``y = act(x·m/(1−p) + residual)``, ``act`` = ReLU (or identity with ``relu=False``), ``m`` a keep
mask with ``P(m_i = 1) = 1 − p`` drawn by a counter-based generator (a keyed 32-bit hash of the
element index, :func:`fastskel.ops.reference.dropout_keep_mask`) from one 64-bit seed taken from
``generator`` (or torch's default generator, so ``torch.manual_seed`` and the engine's RNG state
make it reproducible). The backward regenerates ``m`` from the seed: nothing but the output is
saved, and one pass computes the forward (``torch`` needs a Bernoulli draw, a multiply, an add
and a ReLU, each a pass over memory, and stores the mask).

Backends: "cpp" (``fastskel._C``, CPU; parallel, the same numbers for any thread count) and
"torch" (the reference, the same mask bit for bit). "auto" takes "cpp" for CPU tensors; CUDA
tensors run the reference (:class:`fastskel.nn.STGCN` uses ``torch.nn.Dropout`` there, whose
fused CUDA kernel is already bandwidth bound). The random stream differs from
``torch.nn.functional.dropout``'s: the law is the same (independent Bernoulli(1 − p) keeps,
``1/(1−p)`` scaling; ``p`` resolved to 2^-32), the masks are not; ``backend="torch"`` of *this* op is
the reference of the same hash stream. st-gcn's exact masks come from the unfused modules
(:class:`fastskel.nn.STGCN` with ``backend="torch"``).

Limitations: first-order gradients only on the "cpp" path; ``x`` and ``residual`` must have the
same shape and dtype (no broadcasting).
"""
from __future__ import annotations

from typing import Optional

import torch

from fastskel import _ext
from fastskel.backend import get_backend, resolve
from . import _checks as chk
from . import reference

__all__ = ["dropout_add_relu", "fused_tail_available", "resolve_backend"]

IMPLEMENTED = ("cpp", "torch")
_HAS_OPS = _ext.has_op("dropout_add_relu", torch.device("cpu"))[0]


def _register() -> None:
    @torch.library.register_fake("fastskel::dropout_add_relu")
    def _(x, residual, p, seed, relu):
        return x.new_empty(x.shape)

    @torch.library.register_fake("fastskel::dropout_add_relu_backward")
    def _(grad, out, p, seed, relu, has_residual):
        return grad.new_empty(grad.shape), grad.new_empty(grad.shape if has_residual else (0,))

    def setup_context(ctx, inputs, output):
        x, residual, p, seed, relu = inputs
        ctx.p, ctx.relu, ctx.has_residual = p, relu, residual is not None
        ctx.save_for_backward(output if relu else None, seed)

    def backward(ctx, grad):
        out, seed = ctx.saved_tensors
        gx, gr = torch.ops.fastskel.dropout_add_relu_backward(
            grad, out if out is not None else grad, ctx.p, seed, ctx.relu, ctx.has_residual)
        return gx, (gr if ctx.has_residual else None), None, None, None

    torch.library.register_autograd("fastskel::dropout_add_relu", backward, setup_context=setup_context)

    _ext.forbid_double_backward("dropout_add_relu_backward")


if _HAS_OPS:
    _register()


@torch.compiler.assume_constant_result
def resolve_backend(backend: Optional[str], device: torch.device) -> str:
    """"cpp" or "torch": which implementation :func:`dropout_add_relu` runs on ``device``."""
    return resolve("dropout_add_relu", backend, device, IMPLEMENTED)


@torch.compiler.assume_constant_result
def fused_tail_available(backend: Optional[str], device: torch.device) -> bool:
    """Whether a module whose ops follow ``backend`` (None = process default) should run its
    dropout tail on the ``_C`` kernel: not when that backend is "torch" (the reference modules), and
    only where ``_C`` has the kernel (CPU). Never raises: an explicit "cpp"/"triton" for the other
    ops of the module does not require this one."""
    name = backend if backend is not None else get_backend()
    return name != "torch" and resolve("dropout_add_relu", "auto", device, IMPLEMENTED) == "cpp"


def _seed(generator: Optional[torch.Generator]) -> torch.Tensor:
    dev = generator.device if generator is not None else torch.device("cpu")
    s = torch.randint(-(2 ** 63), 2 ** 63 - 1, (1,), dtype=torch.int64, generator=generator, device=dev)
    return s.cpu()


def dropout_add_relu(x: torch.Tensor, residual: Optional[torch.Tensor] = None, p: float = 0.5,
                     training: bool = True, relu: bool = True, generator: Optional[torch.Generator] = None,
                     backend: Optional[str] = None) -> torch.Tensor:
    """``act(dropout(x, p) + residual)`` in one pass (st-gcn's ``Dropout → + res → ReLU``).

    Args:
        x: any shape, float32/bfloat16/float16/float64.
        residual: same shape and dtype as ``x``, or None.
        p: drop probability in ``[0, 1)``.
        training: False (or ``p == 0``) skips the dropout: ``act(x + residual)``.
        relu: apply ReLU after the sum (False: identity).
        generator: source of the 64-bit seed (None = torch's default generator).
        backend: "auto" | "cpp" | "torch" (None = process default).

    Returns:
        a tensor shaped like ``x``, differentiable in ``x`` and ``residual``.

    Random stream: the keep mask is :func:`fastskel.ops.reference.dropout_keep_mask` of one 64-bit
    seed drawn from ``generator`` (torch's default generator when None), the same on "cpp" and
    "torch" (the reference) bit for bit — and *not* the masks of ``torch.nn.functional.dropout``
    for the same seed (same law, other draws). To get st-gcn's exact masks, run the unfused
    ``F.dropout(x, p) + residual`` then ReLU, which is what :class:`fastskel.nn.STGCN` does when
    built with ``backend="torch"`` (and on CUDA).
    """
    chk.tensor(x, "x")
    if residual is not None:
        chk.tensor(residual, "residual")
        if residual.shape != x.shape:
            raise ValueError(f"residual: expected shape {tuple(x.shape)} like x, got {tuple(residual.shape)}")
        if residual.dtype != x.dtype:
            raise TypeError(f"residual: expected dtype {x.dtype} like x, got {residual.dtype}")
        chk.same_device("residual", residual, x, "x")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) < 1.0:
        raise ValueError(f"p: expected a float in [0, 1), got {p!r}")
    for name, flag in (("training", training), ("relu", relu)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name}: expected a bool, got {type(flag).__name__}")
    if generator is not None and generator.device != x.device and generator.device.type != "cpu":
        raise ValueError(f"generator: expected a CPU generator or one on {x.device} like x, got {generator.device}")
    impl = resolve_backend(backend, x.device)
    if not training or p == 0.0:
        y = x if residual is None else x + residual
        return torch.relu(y) if relu else y
    seed = _seed(generator)
    if impl == "cpp":
        return torch.ops.fastskel.dropout_add_relu(x, residual, float(p), seed, relu)
    return reference.dropout_add_relu(x, residual, float(p), int(seed.item()), relu)
