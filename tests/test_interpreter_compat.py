"""The Triton-interpreter shim (kernels/_interpreter_compat.py): runtime loop bounds work under
every installed interpreter (Triton 3.6 + NumPy 2.4 raised "only 0-dimensional arrays can be
converted to Python scalars" at ``range(0, B, BLOCK)``), and the detection reads the source."""
import types

import pytest
import torch

from conftest import TRITON_DEVICE


def test_needs_patch_reads_the_interpreter_source():
    from fastskel.kernels import _interpreter_compat as compat

    old = types.ModuleType("old_interp")
    exec("def _patch_lang_tensor(tensor, scope):\n"
         "    scope.set_attr(tensor, '__index__', lambda self: int(self.handle.data))\n", old.__dict__)
    new = types.ModuleType("new_interp")
    exec("def _patch_lang_tensor(tensor, scope):\n"
         "    scope.set_attr(tensor, '__index__', lambda self: int(self.handle.data.squeeze()))\n", new.__dict__)
    # exec'd functions have no source file: detection must then decline rather than guess
    assert compat.needs_patch(types.ModuleType("empty")) is False
    assert compat.needs_patch(old) is False and compat.needs_patch(new) is False


def test_needs_patch_on_source_files(tmp_path, monkeypatch):
    import importlib

    from fastskel.kernels import _interpreter_compat as compat

    for name, body, want in [("interp36", "int(self.handle.data)", True),
                             ("interp39", "int(self.handle.data.squeeze())", False)]:
        (tmp_path / f"{name}.py").write_text(
            "def _patch_lang_tensor(tensor, scope):\n"
            f"    scope.set_attr(tensor, '__index__', lambda self: {body})\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        assert compat.needs_patch(importlib.import_module(name)) is want


@pytest.mark.skipif(TRITON_DEVICE != "cpu", reason="the shim is for TRITON_INTERPRET=1 only")
def test_runtime_loop_bound_under_the_interpreter():
    import triton
    import triton.language as tl

    import fastskel.kernels  # noqa: F401 — installs the shim

    @triton.jit
    def _count(out_ptr, n, BLOCK: tl.constexpr):
        acc = tl.zeros([BLOCK], tl.int32)
        for i0 in range(0, n, BLOCK):
            acc += tl.where(i0 + tl.arange(0, BLOCK) < n, 1, 0)
        tl.store(out_ptr + tl.arange(0, BLOCK), acc)

    out = torch.zeros(8, dtype=torch.int32)
    _count[(1,)](out, 37, BLOCK=8)
    assert int(out.sum()) == 37
