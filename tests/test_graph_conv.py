"""fastskel.ops.graph_conv: the _C operator (CPU, and CUDA where present) against the einsum reference.

Forward and every gradient (x, A, weight, bias) on fresh random inputs: odd channel counts, V≠25,
T=1, batch 1, C_in > C_out (mix-first order) and C_in <= C_out (aggregate-first order), with and
without bias; gradcheck in float64; opcheck of both registered ops; torch.compile(fullgraph=True);
the portable (non-AVX2) CPU kernels in a subprocess; argument errors.
"""
import os
import subprocess
import sys

import pytest
import torch

from fastskel.ops import graph_conv, reference as R
from conftest import CUDA, DEVICES, HAS_C, requires_C, requires_cuda

pytestmark = requires_C

# (N, C_in, C_out, T, V, K, bias); the CPU kernels' association order (by their cost model) in the
# comments: forward / backward, "agg" = joint aggregation first, "mix" = channel mix first.
SHAPES = [
    (2, 3, 16, 7, 25, 3, True),     # st-gcn first block (NTU-25)              agg / agg
    (1, 16, 16, 1, 25, 3, False),   # batch 1, T = 1, C_in == C_out, no bias   agg / mix
    (3, 5, 7, 4, 18, 2, True),      # odd channels, V = 18 (OpenPose)          agg / agg
    (2, 13, 6, 3, 7, 1, True),      # C_in > C_out, K = 1                      mix / mix
    (2, 9, 5, 2, 33, 3, True),      # V = 33 > 32: two blocks of joints        mix / mix
    (1, 1, 1, 1, 1, 1, True),       # degenerate                               mix / mix
]
# dtype, tolerance relative to the output scale
DTYPES = [(torch.float32, 1e-5), (torch.float64, 1e-11)]


def _inputs(shape, dtype, device="cpu", seed=0):
    n, ci, co, t, v, k, bias = shape
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, ci, t, v, generator=g, dtype=torch.float64)
    A = torch.rand(k, v, v, generator=g, dtype=torch.float64) / v
    w = torch.randn(k * co, ci, generator=g, dtype=torch.float64) / ci ** 0.5
    b = torch.randn(k * co, generator=g, dtype=torch.float64) if bias else None
    gy = torch.randn(n, co, t, v, generator=g, dtype=torch.float64)
    cast = lambda z: None if z is None else z.to(device=device, dtype=dtype)
    return cast(x), cast(A), cast(w), cast(b), cast(gy)


def _fwd_bwd(fn, x, A, w, b, gy, need=(True, True, True, True)):
    leaves = [z.detach().clone().requires_grad_(r) if z is not None else None for z, r in zip((x, A, w, b), need)]
    y = fn(*leaves)
    y.backward(gy)
    return [y.detach()] + [z.grad if z is not None else None for z in leaves]


def _assert_close(got, want, tol, name):
    scale = want.abs().max().item() if want.numel() else 0.0
    torch.testing.assert_close(got, want, rtol=tol, atol=tol * max(scale, 1.0), msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype,tol", DTYPES, ids=["fp32", "fp64"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:6])) + ("b" if s[6] else ""))
def test_forward_and_grads_match_reference(shape, dtype, tol, device):
    x, A, w, b, gy = _inputs(shape, dtype, device)
    got = _fwd_bwd(lambda *a: graph_conv(*a, backend="cpp"), x, A, w, b, gy)
    want = _fwd_bwd(lambda *a: R.graph_conv(*a), x, A, w, b, gy)
    for name, g_, w_ in zip(("y", "grad_x", "grad_A", "grad_weight", "grad_bias"), got, want):
        if w_ is None:
            assert g_ is None
            continue
        assert g_.dtype == dtype and g_.shape == w_.shape
        _assert_close(g_, w_, tol, name)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision(dtype, device):
    # computed with fp32 accumulation and rounded once: compare with the fp32 reference
    shape = (2, 6, 10, 5, 25, 3, True)
    x, A, w, b, gy = _inputs(shape, dtype, device, seed=1)
    got = _fwd_bwd(lambda *a: graph_conv(*a, backend="cpp"), x, A, w, b, gy)
    want = _fwd_bwd(lambda *a: R.graph_conv(*a), *(z.float() for z in (x, A, w, b, gy)))
    for name, g_, w_ in zip(("y", "grad_x", "grad_A", "grad_weight", "grad_bias"), got, want):
        assert g_.dtype == dtype
        _assert_close(g_.float(), w_, 2e-2, name)


@pytest.mark.parametrize("shape", [(2, 4, 6, 3, 11, 3, True), (2, 7, 3, 2, 5, 2, True)], ids=["agg", "mix"])
@pytest.mark.parametrize("need", [(False, True, True, True), (True, False, False, False), (False, True, False, False),
                                  (False, False, True, False), (False, False, False, True)],
                         ids=["no_x", "x_only", "A_only", "w_only", "b_only"])
def test_partial_gradients(need, shape):
    x, A, w, b, gy = _inputs(shape, torch.float64)
    got = _fwd_bwd(lambda *a: graph_conv(*a, backend="cpp"), x, A, w, b, gy, need)
    want = _fwd_bwd(lambda *a: R.graph_conv(*a), x, A, w, b, gy, need)
    for r, g_, w_ in zip(need, got[1:], want[1:]):
        assert (g_ is None) == (not r)
        if r:
            _assert_close(g_, w_, 1e-11, "grad")


def test_backward_op_output_mask():
    x, A, w, b, gy = _inputs((2, 4, 6, 3, 11, 3, True), torch.float32)
    gx, gA, gw, gb = torch.ops.fastskel.graph_conv_backward(gy, x, A, w, b, [False, True, False, True])
    assert gx.numel() == 0 and gw.numel() == 0 and gA.shape == A.shape and gb.shape == b.shape
    # no bias: grad_bias is empty even when asked for
    *_, gb = torch.ops.fastskel.graph_conv_backward(gy, x, A, w, None, [True, True, True, True])
    assert gb.numel() == 0


def test_non_contiguous_inputs():
    x, A, w, b, gy = _inputs((3, 5, 8, 6, 14, 3, True), torch.float32)
    xt = x.transpose(2, 3).contiguous().transpose(2, 3)          # same values, permuted strides
    At = A.transpose(1, 2).contiguous().transpose(1, 2)
    wt = w.t().contiguous().t()
    got = _fwd_bwd(lambda *a: graph_conv(*a, backend="cpp"), xt, At, wt, b, gy.transpose(2, 3).contiguous().transpose(2, 3))
    want = _fwd_bwd(lambda *a: R.graph_conv(*a), x, A, w, b, gy)
    for g_, w_ in zip(got, want):
        _assert_close(g_, w_, 1e-5, "non-contiguous")


def test_gradcheck_float64():
    # aggregate-first order (C_in < C_out), with bias
    x, A, w, b, _ = _inputs((1, 2, 8, 3, 5, 2, True), torch.float64)
    args = [z.requires_grad_() for z in (x, A, w, b)]
    assert torch.autograd.gradcheck(lambda *a: graph_conv(*a, backend="cpp"), args)
    # mix-first order (C_in > C_out), no bias
    x, A, w, _, _ = _inputs((1, 5, 2, 2, 5, 3, False), torch.float64, seed=3)
    args = [z.requires_grad_() for z in (x, A, w)]
    assert torch.autograd.gradcheck(lambda *a: graph_conv(*a, backend="cpp"), args)


def test_double_backward_raises():
    x, A, w, b, _ = _inputs((1, 2, 3, 2, 4, 2, True), torch.float64)
    x.requires_grad_()
    y = graph_conv(x, A, w, b, backend="cpp")
    (gx,) = torch.autograd.grad(y.pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        gx.sum().backward()


def test_auto_backend_uses_cpp_on_cpu(monkeypatch):
    calls = []
    real = torch.ops.fastskel.graph_conv

    class Spy:
        def __call__(self, *a):
            calls.append(1)
            return real(*a)

    x, A, w, b, _ = _inputs((1, 2, 3, 2, 4, 2, True), torch.float32)
    monkeypatch.setattr(torch.ops.fastskel, "graph_conv", Spy())
    graph_conv(x, A, w, b, backend="auto")
    assert calls == [1]
    graph_conv(x, A, w, b, backend="torch")
    assert calls == [1]


# --------------------------------------------------------------------------- registration
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bias", [True, False])
def test_opcheck(bias, device):
    x, A, w, b, gy = _inputs((2, 3, 5, 3, 7, 3, bias), torch.float32, device)
    for req in ((True, True, True, True), (False, True, True, True)):
        args = [z.detach().requires_grad_(r) if z is not None else None for z, r in zip((x, A, w, b), req)]
        torch.library.opcheck(torch.ops.fastskel.graph_conv.default, tuple(args))
    x2, A2, w2, b2, gy2 = _inputs((2, 7, 3, 2, 5, 2, bias), torch.float32, device)   # mix-first
    torch.library.opcheck(torch.ops.fastskel.graph_conv.default, (x2, A2, w2, b2))
    for mask in ([True, True, True, True], [False, True, False, True]):
        torch.library.opcheck(torch.ops.fastskel.graph_conv_backward.default, (gy, x, A, w, b, mask))


def _compile_step(backend):
    def step(x, A, w, b):
        return graph_conv(x, A, w, b, backend="cpp").square().sum()
    return torch.compile(step, fullgraph=True, backend=backend)


@pytest.mark.parametrize("compiler", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph(compiler):
    x, A, w, b, _ = _inputs((2, 4, 6, 5, 9, 3, True), torch.float32)
    want = _fwd_bwd(lambda *a: R.graph_conv(*a).square().sum(), x, A, w, b, torch.tensor(1.0))
    torch._dynamo.reset()
    try:
        got = _fwd_bwd(_compile_step(compiler), x, A, w, b, torch.tensor(1.0))
    except Exception as exc:
        if compiler == "inductor" and ("Compile" in type(exc).__name__ or "Cxx" in type(exc).__name__):
            pytest.skip(f"the CPU inductor toolchain failed here: {type(exc).__name__}: {str(exc)[:200]}")
        raise
    for g_, w_ in zip(got, want):
        _assert_close(g_, w_, 1e-5, f"compiled ({compiler})")


# --------------------------------------------------------------------------- portable kernels
_PORTABLE = r"""
import torch
from fastskel.ops import graph_conv, reference as R
g = torch.Generator().manual_seed(0)
for (n, ci, co, t, v, k) in [(2, 3, 9, 3, 25, 3), (1, 7, 2, 2, 10, 2)]:
    for dt in (torch.float32, torch.float64):
        x = torch.randn(n, ci, t, v, generator=g).to(dt).requires_grad_()
        A = (torch.rand(k, v, v, generator=g) / v).to(dt).requires_grad_()
        w = torch.randn(k * co, ci, generator=g).to(dt).requires_grad_()
        b = torch.randn(k * co, generator=g).to(dt).requires_grad_()
        outs = []
        for be in ("cpp", "torch"):
            y = graph_conv(x, A, w, b, backend=be)
            gs = torch.autograd.grad(y.square().sum(), (x, A, w, b))
            outs.append((y,) + gs)
        tol = 1e-4 if dt == torch.float32 else 1e-10
        for a, r in zip(*outs):
            torch.testing.assert_close(a, r, rtol=tol, atol=tol * max(1.0, r.abs().max().item()))
print("ok")
"""


def test_portable_simd_kernels_subprocess():
    # ATEN_CPU_CAPABILITY=default selects the at::vec (non-AVX2) instantiation of the CPU kernels.
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default", OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", _PORTABLE], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-2000:]


# --------------------------------------------------------------------------- argument errors
def test_errors():
    x, A, w, b, _ = _inputs((2, 3, 4, 3, 6, 2, True), torch.float32)
    with pytest.raises(ValueError, match="A: expected shape"):
        graph_conv(x, A[:, :5, :5], w, b)
    with pytest.raises(ValueError, match="weight: expected shape"):
        graph_conv(x, A, w[:, :2], b)
    with pytest.raises(ValueError, match="weight: expected shape"):
        graph_conv(x, A, w[:7], None)
    with pytest.raises(ValueError, match="bias: expected shape"):
        graph_conv(x, A, w, b[:3])
    with pytest.raises(TypeError, match="A: expected dtype"):
        graph_conv(x, A.double(), w, b)
    with pytest.raises(ValueError, match="x: expected a 4-D"):
        graph_conv(x[0], A, w, b)
    with pytest.raises(TypeError, match="weight: expected a torch.Tensor"):
        graph_conv(x, A, w.tolist(), b)
    with pytest.raises(RuntimeError, match="weight: expected"):   # the raw op checks too
        torch.ops.fastskel.graph_conv(x, A, w[:, :2], b)


@requires_cuda
def test_cuda_matches_cpu_op_at_pstl_block_shape():
    # a full st-gcn block shape on both devices (fused kernel vs the CPU kernels)
    x, A, w, b, gy = _inputs((4, 64, 128, 13, 25, 3, True), torch.float32)
    cpu = _fwd_bwd(lambda *a: graph_conv(*a, backend="cpp"), x, A, w, b, gy)
    gpu = _fwd_bwd(lambda *a: graph_conv(*a, backend="cpp"), *(z.cuda() for z in (x, A, w, b, gy)))
    for c_, g_ in zip(cpu, gpu):
        _assert_close(g_.cpu(), c_, 1e-5, "cuda vs cpu")


# --------------------------------------------------------------------------- CUDA kernel, emulated on the host
_CUDA_SRC = os.path.join(os.path.dirname(__file__), "..", "csrc", "cuda", "graph_conv_cuda.cu")
_EMULATOR = r"""
// Runs fastskel's fused CUDA kernel on the host: one pthread per CUDA thread, a barrier for
// __syncthreads, blocks one after another. Reads a case from argv[1], writes y to argv[2].
#include <pthread.h>
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>
struct Dim3 { unsigned x = 0, y = 0, z = 0; };
thread_local Dim3 threadIdx, blockIdx;
static pthread_barrier_t barrier;
#define __syncthreads() pthread_barrier_wait(&barrier)
#define __global__
#define __launch_bounds__(n)
#define __shared__
#define __restrict__
using std::min;
namespace at { template <class T> using opmath_type = T; }
alignas(16) unsigned char smem_raw[1 << 22];
#include "kernel.inc"

struct Job { const double *x, *A, *w, *b; double* y; Problem p; Tiles t; bool agg; unsigned bx, by, tid; };
static void* run(void* arg) {
  Job* j = static_cast<Job*>(arg);
  threadIdx.x = j->tid; blockIdx.x = j->bx; blockIdx.y = j->by;
  if (j->agg) graph_conv_fused_kernel<double, true>(j->x, j->A, j->w, j->b, j->y, j->p, j->t.CT, j->t.TT, j->t.CC);
  else graph_conv_fused_kernel<double, false>(j->x, j->A, j->w, j->b, j->y, j->p, j->t.CT, j->t.TT, j->t.CC);
  return nullptr;
}
int main(int argc, char** argv) {
  FILE* f = std::fopen(argv[1], "rb");
  int64_t h[12];
  if (std::fread(h, sizeof(int64_t), 12, f) != 12) return 2;
  Problem p{h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9] != 0};
  const bool has_bias = h[10] != 0;
  std::vector<double> x(p.N * p.Cin * p.T * p.V), A(p.K * p.V * p.V), w(p.K * p.Cout * p.Cin), b(p.K * p.Cout);
  for (auto* v : {&x, &A, &w, &b})
    if (std::fread(v->data(), sizeof(double), v->size(), f) != v->size()) return 2;
  std::fclose(f);
  const bool agg = p.Cin <= p.Cout;
  const Tiles t = choose_tiles(p, agg, sizeof(double), static_cast<size_t>(h[11]));
  if (!t.ok) return 3;
  std::vector<double> y(p.N * p.Cout * p.T * p.V, -1.0);
  pthread_barrier_init(&barrier, nullptr, kThreads);
  const int64_t n_ttiles = (p.T + t.TT - 1) / t.TT;
  for (unsigned bx = 0; bx < p.N * n_ttiles; ++bx)
    for (unsigned by = 0; by < (p.Cout + t.CT - 1) / t.CT; ++by) {
      std::vector<pthread_t> th(kThreads);
      std::vector<Job> jobs(kThreads);
      for (int i = 0; i < kThreads; ++i) {
        jobs[i] = Job{x.data(), A.data(), w.data(), has_bias ? b.data() : nullptr, y.data(), p, t, agg, bx, by,
                      static_cast<unsigned>(i)};
        pthread_create(&th[i], nullptr, run, &jobs[i]);
      }
      for (auto& id : th) pthread_join(id, nullptr);
    }
  f = std::fopen(argv[2], "wb");
  std::fwrite(y.data(), sizeof(double), y.size(), f);
  std::fclose(f);
  std::printf("CT=%d TT=%d CC=%d smem=%zu\n", t.CT, t.TT, t.CC, t.smem);
  return 0;
}
"""


@pytest.fixture(scope="module")
def cuda_emulator(tmp_path_factory):
    import shutil

    cxx = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no host C++ compiler to emulate the CUDA kernel")
    src = open(_CUDA_SRC).read()
    begin, end = src.index("// BEGIN HOST-EMULATED"), src.index("// END HOST-EMULATED")
    d = tmp_path_factory.mktemp("cuda_emu")
    (d / "kernel.inc").write_text(src[begin:end])
    (d / "emu.cpp").write_text(_EMULATOR)
    res = subprocess.run([cxx, "-O1", "-std=c++17", "-pthread", "emu.cpp", "-o", "emu"], cwd=d, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return d


def _emulate(d, x, A, w3, b, w_strides, trans, smem):
    """Run the emulated kernel; w3 is the flat weight array, w_strides (k, o, i)."""
    import numpy as np

    n, cin, t, v = x.shape
    k = A.shape[0]
    cout = w3.numel() // (k * cin)
    head = np.array([n, cin, t, v, k, cout, *w_strides, int(trans), int(b is not None), smem], dtype=np.int64)
    bb = b if b is not None else torch.zeros(k * cout, dtype=torch.float64)
    with open(d / "case.bin", "wb") as f:
        f.write(head.tobytes())
        for z in (x, A, w3, bb):
            f.write(z.double().contiguous().numpy().tobytes())
    res = subprocess.run([str(d / "emu"), str(d / "case.bin"), str(d / "y.bin")], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, (res.returncode, res.stderr[-2000:])
    return torch.from_numpy(np.fromfile(d / "y.bin", dtype=np.float64)).view(n, cout, t, v)


# (N, C_in, C_out, T, V, K, bias, shared-memory limit): agg-first and mix-first tiles, several
# channel chunks (CC < C_in), several output-channel tiles, partial frame tiles, V = 60.
_EMU_CASES = [
    (2, 3, 16, 7, 25, 3, True, 48 * 1024),
    (1, 13, 6, 5, 7, 1, True, 48 * 1024),
    (2, 40, 33, 3, 25, 3, False, 20 * 1024),
    (1, 5, 70, 9, 18, 2, True, 48 * 1024),
    (1, 2, 2, 3, 60, 3, True, 200 * 1024),
]


@pytest.mark.parametrize("case", _EMU_CASES, ids=lambda c: "x".join(map(str, c[:6])))
def test_cuda_kernel_host_emulation(cuda_emulator, case):
    n, ci, co, t, v, k, bias, smem = case
    x, A, w, b, gy = _inputs((n, ci, co, t, v, k, bias), torch.float64, seed=7)
    # forward: weight (K*C_out, C_in) → W(k, o, i) strides (C_out*C_in, C_in, 1)
    y = _emulate(cuda_emulator, x, A, w, b, (co * ci, ci, 1), False, smem)
    _assert_close(y, R.graph_conv(x, A, w, b), 1e-12, "emulated forward")
    # grad_x: the same kernel on grad_out with A^T and W_k^T: strides (C_out*C_in, 1, C_in)
    gx = _emulate(cuda_emulator, gy, A, w, None, (co * ci, 1, ci), True, smem)
    xr = x.clone().requires_grad_()
    R.graph_conv(xr, A, w, b).backward(gy)
    _assert_close(gx, xr.grad, 1e-12, "emulated grad_x")
