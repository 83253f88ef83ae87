// CUDA implementation of fastskel::graph_conv and fastskel::graph_conv_backward.
//
//   y[n,c,t,w] = sum_k sum_v (W_k x + b_k)[n,c,t,v] A[k,v,w]        (st-gcn ConvTemporalGraphical)
//
// Forward: one fused kernel. A block owns (sample n, TT frames, CT output channels); it keeps the
// (K, V, V) graph in shared memory, streams the input channels in chunks of CC through shared
// memory and accumulates its outputs in registers (fp32), in the cheaper association order:
//   C_in <= C_out: Z_k = x A_k in shared memory, then y += sum_k W_k Z_k  (aggregate first)
//   C_in >  C_out: H_k = W_k x (+ b_k) in shared memory, then y += sum_k H_k A_k  (mix first)
// Nothing of size K*C*T*V goes to global memory.
// grad_x is the same kernel on the transposed problem (input grad_out, graph A_k^T, weights W_k^T).
// grad_weight, grad_bias and grad_A are contractions over samples and frames; they run as cuBLAS
// GEMMs (ATen), one partition k at a time on the smaller of the two per-k intermediates, in fp32.
// fp32 / fp16 / bf16 (and fp64) inputs; accumulation in fp32 (fp64 for fp64).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <tuple>

namespace fastskel {
namespace {

// BEGIN HOST-EMULATED: from here to END, tests/test_graph_conv.py compiles the code as plain C++
// (one thread per CUDA thread, a barrier for __syncthreads) to check the kernel without a GPU.
constexpr int kThreads = 256;
constexpr int kOutPerThread = 8;  // register accumulators per thread: a block owns <= 2048 outputs

struct Problem {
  int64_t N, Cin, T, V, K, Cout;
  // Effective weight W(k, o, i) = w[k * w_sk + o * w_so + i * w_si] (o: output channel, i: input).
  int64_t w_sk, w_so, w_si;
  bool trans_A;  // aggregate with A_k^T (grad_x)
};

struct Tiles {
  int CT, TT, CC;
  size_t smem;
  bool ok;
};

template <typename scalar_t, bool AGG_FIRST>
__global__ void __launch_bounds__(kThreads)
    graph_conv_fused_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ A,
                            const scalar_t* __restrict__ w, const scalar_t* __restrict__ bias,
                            scalar_t* __restrict__ y, Problem p, int CT, int TT, int CC) {
  using acc_t = at::opmath_type<scalar_t>;
  extern __shared__ unsigned char smem_raw[];
  acc_t* A_s = reinterpret_cast<acc_t*>(smem_raw);  // K*V*V, A_s[(k*V + v)*V + w]
  const int V = static_cast<int>(p.V), K = static_cast<int>(p.K), T = static_cast<int>(p.T);
  acc_t* s_s = A_s + K * V * V;                     // K*V column sums of A (bias of aggregate-first)
  acc_t* x_s = s_s + K * V;                         // CC*TT*V input chunk
  acc_t* i_s = x_s + CC * TT * V;                   // Z: K*CC*TT*V  or  H: K*CT*TT*V

  const int n_ttiles = (T + TT - 1) / TT;
  const int64_t n = blockIdx.x / n_ttiles;
  const int t0 = (blockIdx.x % n_ttiles) * TT;
  const int c0 = blockIdx.y * CT;
  const int tt_n = min(TT, T - t0);
  const int ct_n = min(CT, static_cast<int>(p.Cout) - c0);
  const int tid = threadIdx.x;

  for (int i = tid; i < K * V * V; i += kThreads) {
    const int k = i / (V * V), r = i % (V * V);
    const int src = p.trans_A ? (k * V + r % V) * V + r / V : i;
    A_s[i] = static_cast<acc_t>(A[src]);
  }
  __syncthreads();
  if (AGG_FIRST && bias != nullptr) {
    for (int i = tid; i < K * V; i += kThreads) {
      const int k = i / V, ww = i % V;
      acc_t s = 0;
      for (int v = 0; v < V; ++v) s += A_s[(k * V + v) * V + ww];
      s_s[i] = s;
    }
    __syncthreads();
  }

  const int n_out = ct_n * tt_n * V;
  acc_t acc[kOutPerThread];
#pragma unroll
  for (int j = 0; j < kOutPerThread; ++j) {
    acc[j] = 0;
    const int o = tid + j * kThreads;
    if (AGG_FIRST && bias != nullptr && o < n_out) {
      const int c = o / (tt_n * V), ww = o % V;
      for (int k = 0; k < K; ++k)
        acc[j] += static_cast<acc_t>(bias[k * p.Cout + c0 + c]) * s_s[k * V + ww];
    }
  }

  for (int ci0 = 0; ci0 < p.Cin; ci0 += CC) {
    const int cc_n = min(static_cast<int64_t>(CC), p.Cin - ci0);
    for (int i = tid; i < cc_n * tt_n * V; i += kThreads) {
      const int cc = i / (tt_n * V), r = i % (tt_n * V);
      const int tt = r / V, v = r % V;
      x_s[(cc * TT + tt) * V + v] = static_cast<acc_t>(x[((n * p.Cin + ci0 + cc) * T + t0 + tt) * V + v]);
    }
    __syncthreads();
    if (AGG_FIRST) {
      for (int i = tid; i < K * cc_n * tt_n * V; i += kThreads) {
        const int k = i / (cc_n * tt_n * V), r = i % (cc_n * tt_n * V);
        const int cc = r / (tt_n * V), r2 = r % (tt_n * V);
        const int tt = r2 / V, ww = r2 % V;
        const acc_t* xr = x_s + (cc * TT + tt) * V;
        const acc_t* Ak = A_s + k * V * V + ww;
        acc_t s = 0;
        for (int v = 0; v < V; ++v) s += xr[v] * Ak[v * V];
        i_s[((k * CC + cc) * TT + tt) * V + ww] = s;
      }
      __syncthreads();
#pragma unroll
      for (int j = 0; j < kOutPerThread; ++j) {
        const int o = tid + j * kThreads;
        if (o < n_out) {
          const int c = o / (tt_n * V), r = o % (tt_n * V);
          const int tt = r / V, ww = r % V;
          const scalar_t* wr = w + (c0 + c) * p.w_so + ci0 * p.w_si;
          for (int k = 0; k < K; ++k) {
            const acc_t* zk = i_s + (k * CC * TT + tt) * V + ww;
            const scalar_t* wk = wr + k * p.w_sk;
            for (int cc = 0; cc < cc_n; ++cc) acc[j] += static_cast<acc_t>(wk[cc * p.w_si]) * zk[cc * TT * V];
          }
        }
      }
    } else {
      for (int i = tid; i < K * ct_n * tt_n * V; i += kThreads) {
        const int k = i / (ct_n * tt_n * V), r = i % (ct_n * tt_n * V);
        const int c = r / (tt_n * V), r2 = r % (tt_n * V);
        const int tt = r2 / V, v = r2 % V;
        acc_t s = (ci0 == 0 && bias != nullptr) ? static_cast<acc_t>(bias[k * p.Cout + c0 + c]) : acc_t(0);
        const scalar_t* wr = w + k * p.w_sk + (c0 + c) * p.w_so + ci0 * p.w_si;
        const acc_t* xc = x_s + tt * V + v;
        for (int cc = 0; cc < cc_n; ++cc) s += static_cast<acc_t>(wr[cc * p.w_si]) * xc[cc * TT * V];
        i_s[((k * CT + c) * TT + tt) * V + v] = s;
      }
      __syncthreads();
#pragma unroll
      for (int j = 0; j < kOutPerThread; ++j) {
        const int o = tid + j * kThreads;
        if (o < n_out) {
          const int c = o / (tt_n * V), r = o % (tt_n * V);
          const int tt = r / V, ww = r % V;
          for (int k = 0; k < K; ++k) {
            const acc_t* hr = i_s + ((k * CT + c) * TT + tt) * V;
            const acc_t* Ak = A_s + k * V * V + ww;
            for (int v = 0; v < V; ++v) acc[j] += hr[v] * Ak[v * V];
          }
        }
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int j = 0; j < kOutPerThread; ++j) {
    const int o = tid + j * kThreads;
    if (o < n_out) {
      const int c = o / (tt_n * V), r = o % (tt_n * V);
      const int tt = r / V, ww = r % V;
      y[((n * p.Cout + c0 + c) * T + t0 + tt) * V + ww] = static_cast<scalar_t>(acc[j]);
    }
  }
}

Tiles choose_tiles(const Problem& p, bool agg_first, size_t elem, size_t smem_limit) {
  const int64_t max_out = int64_t(kThreads) * kOutPerThread;
  const int64_t V = p.V, K = p.K;
  if (V > max_out) return {0, 0, 0, 0, false};
  int64_t CT = std::min<int64_t>(p.Cout, std::max<int64_t>(1, std::min<int64_t>(32, max_out / V)));
  int64_t TT = std::max<int64_t>(1, std::min<int64_t>(p.T, max_out / (CT * V)));
  const int64_t fixed = K * V * V + K * V;
  const int64_t budget = static_cast<int64_t>(smem_limit / elem);
  for (;;) {
    const int64_t per_cc = agg_first ? (1 + K) * TT * V : TT * V;
    const int64_t inter = agg_first ? 0 : K * CT * TT * V;
    const int64_t cc = std::min<int64_t>({p.Cin, 32, (budget - fixed - inter) / per_cc});
    if (cc >= 1)
      return {static_cast<int>(CT), static_cast<int>(TT), static_cast<int>(cc),
              static_cast<size_t>(fixed + inter + cc * per_cc) * elem, true};
    if (TT > 1) TT = (TT + 1) / 2;
    else if (CT > 1) CT = (CT + 1) / 2;
    else return {0, 0, 0, 0, false};
  }
}

// END HOST-EMULATED

// Composite (cuBLAS) forward for shapes the fused kernel cannot tile (graphs too large for shared memory).
at::Tensor graph_conv_composite(const at::Tensor& x, const at::Tensor& A, const at::Tensor& weight,
                                const c10::optional<at::Tensor>& bias) {
  const int64_t N = x.size(0), Cin = x.size(1), T = x.size(2), V = x.size(3), K = A.size(0);
  const int64_t Cout = weight.size(0) / K;
  at::Tensor h = at::matmul(weight, x.reshape({N, Cin, T * V}));
  if (bias.has_value() && bias->defined()) h = h + bias->view({1, K * Cout, 1});
  at::Tensor hk = h.view({N, K, Cout, T, V}).permute({0, 2, 3, 1, 4}).reshape({N * Cout * T, K * V});
  return at::matmul(hk, A.reshape({K * V, V})).view({N, Cout, T, V});
}

// Runs the fused kernel for problem p; returns false when no tiling fits this device.
bool launch_fused(const at::Tensor& x, const at::Tensor& A, const at::Tensor& w, const at::Tensor* bias,
                  at::Tensor& y, const Problem& p) {
  const bool agg_first = p.Cin <= p.Cout;
  int optin_bytes = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&optin_bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, x.get_device()));
  const size_t optin = static_cast<size_t>(std::max(optin_bytes, 48 * 1024));
  const size_t elem = x.scalar_type() == at::kDouble ? sizeof(double) : sizeof(float);
  Tiles tiles = choose_tiles(p, agg_first, elem, std::min<size_t>(48 * 1024, optin));
  if (!tiles.ok) tiles = choose_tiles(p, agg_first, elem, optin);
  if (!tiles.ok) return false;
  const int64_t n_ttiles = (p.T + tiles.TT - 1) / tiles.TT;
  const dim3 grid(static_cast<unsigned>(p.N * n_ttiles), static_cast<unsigned>((p.Cout + tiles.CT - 1) / tiles.CT));
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "graph_conv_fused", [&] {
    const scalar_t* b = bias != nullptr ? bias->data_ptr<scalar_t>() : nullptr;
    auto kernel = agg_first ? graph_conv_fused_kernel<scalar_t, true> : graph_conv_fused_kernel<scalar_t, false>;
    if (tiles.smem > 48 * 1024)
      C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(tiles.smem)));
    kernel<<<grid, kThreads, tiles.smem, stream>>>(x.data_ptr<scalar_t>(), A.data_ptr<scalar_t>(),
                                                   w.data_ptr<scalar_t>(), b, y.data_ptr<scalar_t>(), p, tiles.CT,
                                                   tiles.TT, tiles.CC);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return true;
}

void check_cuda_args(const char* op, const at::Tensor& x, const at::Tensor& A, const at::Tensor& weight,
                     const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.dim() == 4, op, ": x: expected (N, C_in, T, V), got ", x.sizes());
  TORCH_CHECK(A.dim() == 3 && A.size(0) > 0 && A.size(1) == x.size(3) && A.size(2) == x.size(3), op,
              ": A: expected (K, ", x.size(3), ", ", x.size(3), ") with K >= 1, got ", A.sizes());
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) == x.size(1) && weight.size(0) > 0 &&
                  weight.size(0) % A.size(0) == 0,
              op, ": weight: expected (K*C_out, ", x.size(1), ") with K=", A.size(0), ", got ", weight.sizes());
  TORCH_CHECK(A.scalar_type() == x.scalar_type() && weight.scalar_type() == x.scalar_type(), op,
              ": A and weight: expected dtype ", x.scalar_type(), " like x");
  TORCH_CHECK(x.is_cuda() && A.device() == x.device() && weight.device() == x.device(), op,
              ": expected all tensors on the same CUDA device");
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0) && bias->scalar_type() == x.scalar_type() &&
                    bias->device() == x.device(),
                op, ": bias: expected (", weight.size(0), ",) of x's dtype and device, got ", bias->sizes());
  }
}

}  // namespace

at::Tensor graph_conv_cuda(const at::Tensor& x_, const at::Tensor& A_, const at::Tensor& weight_,
                           const c10::optional<at::Tensor>& bias_) {
  check_cuda_args("graph_conv", x_, A_, weight_, bias_);
  const c10::cuda::CUDAGuard guard(x_.device());
  const at::Tensor x = x_.contiguous(), A = A_.contiguous(), weight = weight_.contiguous();
  const bool has_bias = bias_.has_value() && bias_->defined();
  const at::Tensor bias = has_bias ? bias_->contiguous() : at::Tensor();
  const int64_t K = A.size(0), Cin = x.size(1), Cout = weight.size(0) / K;
  at::Tensor y = at::empty({x.size(0), Cout, x.size(2), x.size(3)}, x.options());
  if (y.numel() == 0) return y;
  const Problem p{x.size(0), Cin, x.size(2), x.size(3), K, Cout, Cout * Cin, Cin, 1, false};
  if (!launch_fused(x, A, weight, has_bias ? &bias : nullptr, y, p)) {
    return graph_conv_composite(x, A, weight, has_bias ? c10::optional<at::Tensor>(bias) : c10::nullopt);
  }
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> graph_conv_backward_cuda(
    const at::Tensor& grad_, const at::Tensor& x_, const at::Tensor& A_, const at::Tensor& weight_,
    const c10::optional<at::Tensor>& bias_, std::array<bool, 4> mask) {
  check_cuda_args("graph_conv_backward", x_, A_, weight_, bias_);
  const c10::cuda::CUDAGuard guard(x_.device());
  const int64_t N = x_.size(0), Cin = x_.size(1), T = x_.size(2), V = x_.size(3), K = A_.size(0);
  const int64_t Cout = weight_.size(0) / K, TV = T * V;
  TORCH_CHECK(grad_.dim() == 4 && grad_.size(0) == N && grad_.size(1) == Cout && grad_.size(2) == T &&
                  grad_.size(3) == V && grad_.device() == x_.device(),
              "graph_conv_backward: grad_out: expected (", N, ", ", Cout, ", ", T, ", ", V, ") on x's device, got ",
              grad_.sizes());
  const bool has_bias = bias_.has_value() && bias_->defined();
  mask[3] = mask[3] && has_bias;
  const at::ScalarType st = x_.scalar_type();
  auto none = [&] { return at::empty({0}, x_.options()); };
  at::Tensor gx = none(), gA = none(), gw = none(), gb = none();
  const at::Tensor gy = grad_.to(st).contiguous();

  if (mask[0]) {
    const at::Tensor x = x_.contiguous(), A = A_.contiguous(), weight = weight_.contiguous();
    gx = at::empty_like(x);
    // Transposed problem: input grad_out (C_out channels), graph A_k^T, weight W_k^T (C_in x C_out).
    const Problem p{N, Cout, T, V, K, Cin, Cout * Cin, 1, Cin, true};
    if (!launch_fused(gy, A, weight, nullptr, gx, p)) {
      // grad_x = sum_k W_k^T (grad_out A_k^T)
      const at::Tensor gh = at::matmul(gy.view({N, 1, Cout * T, V}), A.transpose(1, 2).unsqueeze(0));
      gx = at::matmul(weight.view({K, Cout, Cin}).permute({2, 0, 1}).reshape({Cin, K * Cout}),
                      gh.view({N, K * Cout, TV}))
               .view({N, Cin, T, V});
    }
  }
  if (!(mask[1] || mask[2] || mask[3])) return {gx, gA, gw, gb};

  // Reductions over samples and frames in fp32 (fp64 for fp64): per partition k, one GEMM over the
  // smaller side (C_in or C_out) of a (N, C, T, V) intermediate, then a batched GEMM summed over n.
  const at::ScalarType ct = st == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor xf = x_.to(ct).contiguous(), Af = A_.to(ct).contiguous(), wf = weight_.to(ct).contiguous();
  const at::Tensor gyf = gy.to(ct);
  const at::Tensor x3 = xf.view({N, Cin, TV}), gy3 = gyf.view({N, Cout, TV});
  const at::Tensor wk = wf.view({K, Cout, Cin});
  const at::Tensor bf = has_bias ? bias_->to(ct).view({K, Cout}) : at::Tensor();
  const at::Tensor gys = gyf.sum(at::IntArrayRef{0, 2});  // (C_out, V); a bare {0, 2} is ambiguous (DimnameList) for nvcc 13
  if (mask[2]) {
    at::Tensor gwf = at::empty({K, Cout, Cin}, xf.options());
    for (int64_t k = 0; k < K; ++k) {
      if (Cin <= Cout) {
        // Z_k = x A_k; grad_W_k = sum_n gy_n Z_k,n^T
        const at::Tensor Zk = at::matmul(xf.view({N * Cin * T, V}), Af[k]).view({N, Cin, TV});
        gwf[k].copy_(at::bmm(gy3, Zk.transpose(1, 2)).sum(0));
      } else {
        // GH_k = gy A_k^T; grad_W_k = sum_n GH_k,n x_n^T
        const at::Tensor Gk = at::matmul(gyf.view({N * Cout * T, V}), Af[k].t()).view({N, Cout, TV});
        gwf[k].copy_(at::bmm(Gk, x3.transpose(1, 2)).sum(0));
      }
    }
    gw = gwf.view({K * Cout, Cin}).to(st);
  }
  if (mask[3]) {
    // grad_b[k, c] = sum_w gys[c, w] * s_k[w], s_k[w] = sum_v A[k, v, w]
    gb = at::matmul(Af.sum(1), gys.t()).reshape({K * Cout}).to(st);
  }
  if (mask[1]) {
    at::Tensor gaf = at::empty({K, V, V}, xf.options());
    for (int64_t k = 0; k < K; ++k) {
      if (Cin <= Cout) {
        // G2_k = W_k^T gy; grad_A_k = sum x^T G2_k (+ the bias term, the same for every v)
        const at::Tensor G2k = at::matmul(wk[k].t(), gy3).contiguous();  // (N, C_in, T*V)
        at::Tensor gak = at::mm(xf.view({N * Cin * T, V}).t(), G2k.view({N * Cin * T, V}));
        if (has_bias) gak = gak + at::matmul(bf[k], gys).unsqueeze(0);
        gaf[k].copy_(gak);
      } else {
        // H_k = W_k x + b_k; grad_A_k = sum H_k^T gy
        at::Tensor Hk = at::matmul(wk[k], x3);  // (N, C_out, T*V)
        if (has_bias) Hk = Hk + bf[k].view({1, Cout, 1});
        gaf[k].copy_(at::mm(Hk.contiguous().view({N * Cout * T, V}).t(), gyf.view({N * Cout * T, V})));
      }
    }
    gA = gaf.to(st);
  }
  return {gx, gA, gw, gb};
}

}  // namespace fastskel

TORCH_LIBRARY_IMPL(fastskel, CUDA, m) {
  m.impl("graph_conv", &fastskel::graph_conv_cuda);
  m.impl("graph_conv_backward", &fastskel::graph_conv_backward_cuda);
}
