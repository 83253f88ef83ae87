"""The ``fastskel`` command. It only wires: parsing here, work in the library."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import platform
import sys
from typing import List, Optional


def info_lines() -> List[str]:
    import torch

    import fastskel
    from fastskel import _ext
    from fastskel.backend import available_backends, get_backend
    from fastskel.kernels import HAS_TRITON, IMPORT_ERROR, INTERPRET

    lines = [
        f"fastskel {fastskel.__version__}",
        f"python   {platform.python_version()} ({platform.machine()})",
        f"torch    {torch.__version__} (CUDA {torch.version.cuda or 'none'})",
    ]
    if HAS_TRITON:
        import triton

        lines.append(f"triton   {triton.__version__}{' (TRITON_INTERPRET=1: kernels run on CPU)' if INTERPRET else ''}")
    else:
        lines.append(f"triton   unavailable ({IMPORT_ERROR})")
    if torch.cuda.is_available():
        lines.append(f"device   cuda: {torch.cuda.get_device_name(0)} (x{torch.cuda.device_count()})")
    else:
        lines.append("device   cpu (no CUDA device)")
    if _ext.load() is not None:
        lines.append(f"_C       built, ops {list(_ext.compiled_ops())}, CUDA kernels {'yes' if _ext.cuda_compiled() else 'no'}")
    else:
        lines.append(f"_C       not available: {_ext.error()} (ops fall back to the references)")
    lines.append(f"backend  default '{get_backend()}'")
    lines.append(f"         runnable on cpu: {available_backends(device='cpu')}")
    if torch.cuda.is_available():
        lines.append(f"         runnable on cuda: {available_backends(device='cuda')}")
    return lines


def cmd_info(args: argparse.Namespace) -> int:
    print("\n".join(info_lines()))
    return 0


# Modules that add subcommands: each has ``register(subparsers)`` setting ``func`` on its parsers.
COMMAND_MODULES = (
    "fastskel.data.cli",      # prepare
    "fastskel.engine.cli",    # pretrain, eval, distill, export, bench, profile
    "fastskel.engine.runs_cli",  # plot, report
    "fastskel.stream.cli",    # stream
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastskel", description="Fast self-supervised skeleton action recognition.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sp = sub.add_parser("info", help="versions, device, available backends and _C ops")
    sp.set_defaults(func=cmd_info)
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).register(sub)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
