"""Backend selection (docs/design.md §2) and the package working without _C or triton."""
import os
import subprocess
import sys

import pytest
import torch

import fastskel
from fastskel import ops
from fastskel.backend import BackendUnavailableError, resolve

from conftest import HAS_C, TRITON_DEVICE


@pytest.fixture(autouse=True)
def _restore_default():
    yield
    fastskel.set_backend(None)


def test_default_and_set_backend(monkeypatch):
    monkeypatch.delenv("FASTSKEL_BACKEND", raising=False)
    assert fastskel.get_backend() == "auto"
    fastskel.set_backend("torch")
    assert fastskel.get_backend() == "torch"
    fastskel.set_backend(None)
    monkeypatch.setenv("FASTSKEL_BACKEND", "cpp")
    assert fastskel.get_backend() == "cpp"
    monkeypatch.setenv("FASTSKEL_BACKEND", "fast")
    with pytest.raises(ValueError, match="FASTSKEL_BACKEND"):
        fastskel.get_backend()
    with pytest.raises(ValueError, match="backend"):
        fastskel.set_backend("cuda")


def test_auto_rule():
    cpu = torch.device("cpu")
    assert resolve("x", "auto", cpu, ("torch",)) == "torch"
    assert resolve("graph_conv", "auto", cpu, ("cpp", "torch")) == ("cpp" if HAS_C else "torch")
    # auto never picks Triton for CPU tensors, even under the interpreter
    assert resolve("frame_motion", "auto", cpu, ("triton", "torch")) == "torch"


def test_explicit_unavailable_backend_raises():
    x = torch.randn(2, 3, 8, 25)
    with pytest.raises(BackendUnavailableError, match="patchify|implements"):
        resolve("patchify", "cpp", torch.device("cpu"), ("torch",))
    if TRITON_DEVICE != "cpu":
        with pytest.raises(BackendUnavailableError, match="TRITON_INTERPRET"):
            resolve("frame_motion", "triton", torch.device("cpu"), ("triton", "torch"))
    with pytest.raises(ValueError, match="backend"):
        ops.frame_motion(x, backend="gpu")


def test_available_backends_lists_torch():
    assert "torch" in fastskel.available_backends()
    assert ("cpp" in fastskel.available_backends("graph_conv")) == HAS_C


def _run(code: str, **env) -> subprocess.CompletedProcess:
    e = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, timeout=120)


def test_import_without_C():
    code = ("import torch, fastskel; from fastskel import ops, _ext; print(ops.frame_motion);"
            "assert _ext.load() is None and 'FASTSKEL_DISABLE_C' in _ext.error();"
            "A = fastskel.SkeletonGraph.ntu25().partition(); x = torch.randn(2, 3, 4, 25);"
            "w = torch.randn(6, 3); y = ops.graph_conv(x, A, w); assert y.shape == (2, 2, 4, 25);"
            "import fastskel.backend as b\n"
            "try:\n    ops.graph_conv(x, A, w, backend='cpp')\nexcept b.BackendUnavailableError as e:\n    print('ERR', e)")
    r = _run(code, FASTSKEL_DISABLE_C="1")
    assert r.returncode == 0, r.stderr
    assert "<function frame_motion" in r.stdout and "ERR" in r.stdout and "not built" in r.stdout


def test_import_without_triton():
    code = ("import sys; sys.modules['triton'] = None\n"
            "import torch, fastskel; from fastskel import ops\n"
            "from fastskel.kernels import HAS_TRITON; assert not HAS_TRITON\n"
            "print(ops.frame_motion(torch.randn(2, 3, 5, 25)).shape)\n"
            "from fastskel.backend import triton_status; print(triton_status('cpu'))")
    r = _run(code, TRITON_INTERPRET="1")
    assert r.returncode == 0, r.stderr
    assert "torch.Size([2, 5])" in r.stdout and "not importable" in r.stdout


def test_info_cli_runs():
    r = subprocess.run([sys.executable, "-m", "fastskel.cli", "info"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"fastskel {fastskel.__version__}" in r.stdout and "torch" in r.stdout and "_C" in r.stdout


@pytest.mark.skipif(not HAS_C, reason="fastskel._C is not built")
def test_stale_C_without_backward_counts_as_missing(monkeypatch):
    from fastskel import _ext
    from fastskel.backend import available_backends, cpp_status

    monkeypatch.setattr(_ext, "compiled_ops", lambda: ("graph_conv",))
    ok, why = cpp_status("graph_conv", "cpu")
    assert not ok and "graph_conv_backward" in why
    assert "cpp" not in available_backends("graph_conv", "cpu", ("cpp", "torch"))
    assert resolve("graph_conv", "auto", torch.device("cpu"), ("cpp", "torch")) == "torch"
    with pytest.raises(BackendUnavailableError, match="graph_conv_backward"):
        resolve("graph_conv", "cpp", torch.device("cpu"), ("cpp", "torch"))
