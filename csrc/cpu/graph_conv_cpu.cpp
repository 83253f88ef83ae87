// CPU implementation of fastskel::graph_conv and fastskel::graph_conv_backward.
//
//   y[n,c,t,w] = sum_k sum_v (W_k x + b_k)[n,c,t,v] A[k,v,w]        (st-gcn ConvTemporalGraphical)
//
// The bias is folded in as one extra input channel of ones (C' = C_in + 1): W'_k = [W_k | b_k],
// x' = [x; 1], so y = sum_k W'_k x' A_k, grad_bias is the last column of grad_W', and the bias term
// of grad_A comes out of the same loops.
//
// Work is split over samples with at::parallel_for and tiled over frames, so every intermediate
// (at most K * max(C', C_out) * T_chunk * V values) lives in a per-thread buffer that stays in cache;
// nothing of size K*C_out*T*V is ever materialised.
//
// Both passes pick the association order with fewer multiply-adds for the gradients requested
// (forward_aggregate_first / backward_aggregate_first below):
//   forward, aggregate first: Z_k = x' A_k (joint aggregation), then y = [W'_0 .. W'_K-1] Z
//   forward, mix first:       H = W x + b (channel mix), then y = sum_k H_k A_k
//   backward, aggregate first: G_k = W'_k^T gy; grad_x = sum_k G_k A_k^T; grad_A_k = x'^T G_k;
//                              grad_W' = gy Z^T (Z = x' A recomputed per chunk)
//   backward, mix first:       GH_k = gy A_k^T; grad_x = W^T GH; [grad_W | grad_b] = GH [x; 1]^T;
//                              grad_A_k = H_k^T gy (H = W x + b recomputed per chunk)
// Roughly, aggregate first is cheaper when C_in < C_out and mix first when C_in > C_out.
//
// Inner loops are register-tiled micro-kernels over a small SIMD policy: at::vec::Vectorized
// (generic / NEON) everywhere, and an AVX2+FMA instantiation on x86-64 chosen at run time. The
// kernel section of this file is compiled twice, once per policy, by including the file into
// itself (the way ATen compiles its kernels once per CPU capability). fp32 and fp64 run natively;
// fp16/bf16 inputs are computed in fp32 and rounded once at the end.
#ifndef FASTSKEL_GC_KERNEL_PASS

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define FASTSKEL_GC_X86 1
#else
#define FASTSKEL_GC_X86 0
#endif

namespace fastskel {
namespace gc {

// SIMD policy on at::vec::Vectorized: portable (generic code, NEON on aarch64).
template <typename T>
struct VecAten {
  using V = at::vec::Vectorized<T>;
  static constexpr int W = static_cast<int>(V::size());
  static V zero() { return V(T(0)); }
  static V set1(T a) { return V(a); }
  static V load(const T* p) { return V::loadu(p); }
  static V load_n(const T* p, int n) { return n >= W ? V::loadu(p) : V::loadu(p, n); }
  static void store(T* p, const V& v) { v.store(p); }
  static void store_n(T* p, const V& v, int n) { v.store(p, std::min(n, W)); }
  static V fma(const V& a, const V& b, const V& c) { return at::vec::fmadd(a, b, c); }
  static T hsum(const V& v) {
    T buf[W];
    v.store(buf);
    T s = 0;
    for (int i = 0; i < W; ++i) s += buf[i];
    return s;
  }
};

// Problem sizes shared by both passes.
struct Dims {
  int64_t N, Cin, T, V, K, Cout;
  bool has_bias;
  int64_t Cp() const { return Cin + (has_bias ? 1 : 0); }
};

// Multiply-adds per frame of one sample (the factor T*N is common to every order).
//   forward, aggregate first: Z = x'A (K C' V^2) + y = W'Z (C_out K C' V)
//   forward, mix first:       H = Wx+b (K C_out C_in V) + y = sum H_k A_k (K C_out V^2)
inline bool forward_aggregate_first(const Dims& d) {
  const double V = double(d.V), Cp = double(d.Cp()), Ci = double(d.Cin), Co = double(d.Cout);
  return Cp * (V + Co) <= Co * (Ci + V);
}

// Backward orders, for the gradients requested:
//   "aggregate" (A): G = W'^T gy (K C' C_out V); grad_x = sum G_k A_k^T (K C_in V^2);
//                    grad_A = x^T G (K C_in V^2); grad_W' = gy (x'A)^T (K C_in V^2 + K C' C_out V)
//   "mix" (B):       GH = gy A^T (K C_out V^2); grad_x = W^T GH (K C_out C_in V);
//                    grad_W, grad_b from GH x^T (K C_out C_in V);
//                    grad_A = H^T gy with H = Wx+b (K C_out C_in V + K C_out V^2)
inline bool backward_aggregate_first(const Dims& d, bool gx, bool gA, bool gw) {
  const double V = double(d.V), Cp = double(d.Cp()), Ci = double(d.Cin), Co = double(d.Cout), K = double(d.K);
  double a = 0, b = 0;
  if (gx || gA) a += K * Cp * Co * V;
  if (gx) a += K * Ci * V * V;
  if (gA) a += K * Ci * V * V;
  if (gw) a += K * Ci * V * V + K * Cp * Co * V;
  if (gx || gw) b += K * Co * V * V;
  if (gx) b += K * Co * Ci * V;
  if (gw) b += K * Co * Ci * V;
  if (gA) b += K * Co * Ci * V + K * Co * V * V;
  return a <= b;
}

inline int64_t frames_per_chunk(int64_t channels_times_k, int64_t V, int64_t T, int64_t elem_size) {
  // Per-thread intermediate of channels_times_k * Tc * V elements, ~128 KiB (L2-resident).
  const int64_t budget = (int64_t(128) << 10) / elem_size;
  const int64_t per_frame = std::max<int64_t>(1, channels_times_k * V);
  return std::max<int64_t>(1, std::min<int64_t>(T, budget / per_frame));
}

}  // namespace gc
}  // namespace fastskel

// ----------------------------------------------------------------------------- kernel instantiations
#define FASTSKEL_GC_KERNEL_PASS 1

namespace fastskel {
namespace gc {
namespace generic {
template <typename T>
using Simd = VecAten<T>;
#include "graph_conv_cpu.cpp"
}  // namespace generic
}  // namespace gc
}  // namespace fastskel

#if FASTSKEL_GC_X86
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
namespace fastskel {
namespace gc {
namespace avx2 {

inline __m256i mask32(int n) {
  alignas(32) static const int32_t m[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(m + 8 - n));
}
inline __m256i mask64(int n) {
  alignas(32) static const int64_t m[8] = {-1, -1, -1, -1, 0, 0, 0, 0};
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(m + 4 - n));
}

template <typename T>
struct Simd;

template <>
struct Simd<float> {
  using V = __m256;
  static constexpr int W = 8;
  static inline V zero() { return _mm256_setzero_ps(); }
  static inline V set1(float a) { return _mm256_set1_ps(a); }
  static inline V load(const float* p) { return _mm256_loadu_ps(p); }
  static inline V load_n(const float* p, int n) { return n >= W ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask32(n)); }
  static inline void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static inline void store_n(float* p, V v, int n) {
    if (n >= W) _mm256_storeu_ps(p, v); else _mm256_maskstore_ps(p, mask32(n), v);
  }
  static inline V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static inline float hsum(V v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
};

template <>
struct Simd<double> {
  using V = __m256d;
  static constexpr int W = 4;
  static inline V zero() { return _mm256_setzero_pd(); }
  static inline V set1(double a) { return _mm256_set1_pd(a); }
  static inline V load(const double* p) { return _mm256_loadu_pd(p); }
  static inline V load_n(const double* p, int n) { return n >= W ? _mm256_loadu_pd(p) : _mm256_maskload_pd(p, mask64(n)); }
  static inline void store(double* p, V v) { _mm256_storeu_pd(p, v); }
  static inline void store_n(double* p, V v, int n) {
    if (n >= W) _mm256_storeu_pd(p, v); else _mm256_maskstore_pd(p, mask64(n), v);
  }
  static inline V fma(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  static inline double hsum(V v) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
  }
};

#include "graph_conv_cpu.cpp"
}  // namespace avx2
}  // namespace gc
}  // namespace fastskel
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif  // FASTSKEL_GC_X86

// ----------------------------------------------------------------------------- operators
namespace fastskel {
namespace {

bool use_avx2() {
#if FASTSKEL_GC_X86
  static const bool ok = [] {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return false;
    // ATen's own switch (ATEN_CPU_CAPABILITY=default) also selects the portable kernels here.
    const char* env = std::getenv("ATEN_CPU_CAPABILITY");
    return !(env != nullptr && std::string(env) == "default");
  }();
  return ok;
#else
  return false;
#endif
}

gc::Dims check_args(const char* op, const at::Tensor& x, const at::Tensor& A, const at::Tensor& weight,
                    const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.dim() == 4, op, ": x: expected (N, C_in, T, V), got ", x.sizes());
  TORCH_CHECK(A.dim() == 3, op, ": A: expected (K, V, V), got ", A.sizes());
  TORCH_CHECK(weight.dim() == 2, op, ": weight: expected (K*C_out, C_in), got ", weight.sizes());
  gc::Dims d{x.size(0), x.size(1), x.size(2), x.size(3), A.size(0), 0, bias.has_value() && bias->defined()};
  TORCH_CHECK(d.K > 0 && A.size(1) == d.V && A.size(2) == d.V, op, ": A: expected (K, ", d.V, ", ", d.V,
              ") with K >= 1, got ", A.sizes());
  TORCH_CHECK(weight.size(1) == d.Cin && weight.size(0) > 0 && weight.size(0) % d.K == 0, op,
              ": weight: expected (K*C_out, ", d.Cin, ") with K=", d.K, ", got ", weight.sizes());
  d.Cout = weight.size(0) / d.K;
  TORCH_CHECK(A.scalar_type() == x.scalar_type() && weight.scalar_type() == x.scalar_type(), op,
              ": A and weight: expected dtype ", x.scalar_type(), " like x, got ", A.scalar_type(), " and ",
              weight.scalar_type());
  TORCH_CHECK(x.device().is_cpu() && A.device().is_cpu() && weight.device().is_cpu(), op,
              ": expected CPU tensors");
  if (d.has_bias) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0), op, ": bias: expected (", weight.size(0),
                ",), got ", bias->sizes());
    TORCH_CHECK(bias->scalar_type() == x.scalar_type() && bias->device().is_cpu(), op,
                ": bias: expected a CPU tensor of dtype ", x.scalar_type());
  }
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), op, ": x: expected a floating dtype, got ", x.scalar_type());
  return d;
}

bool is_reduced(at::ScalarType t) { return t == at::kHalf || t == at::kBFloat16; }

c10::optional<at::Tensor> opt_to(const c10::optional<at::Tensor>& b, at::ScalarType t) {
  if (b.has_value() && b->defined()) return b->to(t).contiguous();
  return c10::nullopt;
}

}  // namespace

at::Tensor graph_conv_cpu(const at::Tensor& x_, const at::Tensor& A_, const at::Tensor& weight_,
                          const c10::optional<at::Tensor>& bias_) {
  const gc::Dims d = check_args("graph_conv", x_, A_, weight_, bias_);
  const at::ScalarType st = x_.scalar_type();
  const at::ScalarType ct = is_reduced(st) ? at::kFloat : st;
  const at::Tensor x = x_.to(ct).contiguous(), A = A_.to(ct).contiguous(), weight = weight_.to(ct).contiguous();
  const c10::optional<at::Tensor> bias = opt_to(bias_, ct);
  at::Tensor y = at::empty({d.N, d.Cout, d.T, d.V}, x.options());
  AT_DISPATCH_FLOATING_TYPES(ct, "graph_conv_cpu", [&] {
    const scalar_t* b = bias ? bias->data_ptr<scalar_t>() : nullptr;
    if (use_avx2()) {
#if FASTSKEL_GC_X86
      gc::avx2::forward<scalar_t>(d, x.data_ptr<scalar_t>(), A.data_ptr<scalar_t>(), weight.data_ptr<scalar_t>(), b,
                                  y.data_ptr<scalar_t>());
#endif
    } else {
      gc::generic::forward<scalar_t>(d, x.data_ptr<scalar_t>(), A.data_ptr<scalar_t>(), weight.data_ptr<scalar_t>(),
                                     b, y.data_ptr<scalar_t>());
    }
  });
  return ct == st ? y : y.to(st);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> graph_conv_backward_cpu(
    const at::Tensor& grad_, const at::Tensor& x_, const at::Tensor& A_, const at::Tensor& weight_,
    const c10::optional<at::Tensor>& bias_, std::array<bool, 4> mask) {
  const gc::Dims d = check_args("graph_conv_backward", x_, A_, weight_, bias_);
  TORCH_CHECK(grad_.dim() == 4 && grad_.size(0) == d.N && grad_.size(1) == d.Cout && grad_.size(2) == d.T &&
                  grad_.size(3) == d.V,
              "graph_conv_backward: grad_out: expected (", d.N, ", ", d.Cout, ", ", d.T, ", ", d.V, "), got ",
              grad_.sizes());
  TORCH_CHECK(grad_.device().is_cpu(), "graph_conv_backward: grad_out: expected a CPU tensor");
  const at::ScalarType st = x_.scalar_type();
  const at::ScalarType ct = is_reduced(st) ? at::kFloat : st;
  const at::Tensor x = x_.to(ct).contiguous(), A = A_.to(ct).contiguous(), weight = weight_.to(ct).contiguous();
  const at::Tensor gy = grad_.to(ct).contiguous();
  const c10::optional<at::Tensor> bias = opt_to(bias_, ct);
  mask[3] = mask[3] && d.has_bias;
  auto none = [&] { return at::empty({0}, x_.options()); };
  at::Tensor gx = mask[0] ? at::empty_like(x) : none();
  at::Tensor gA = mask[1] ? at::empty_like(A) : none();
  at::Tensor gw = mask[2] ? at::empty_like(weight) : none();
  at::Tensor gb = mask[3] ? at::empty({d.K * d.Cout}, x.options()) : none();
  if (mask[0] || mask[1] || mask[2] || mask[3]) {
    AT_DISPATCH_FLOATING_TYPES(ct, "graph_conv_backward_cpu", [&] {
      using T = scalar_t;
      const T* b = bias ? bias->data_ptr<T>() : nullptr;
      T* pgx = mask[0] ? gx.data_ptr<T>() : nullptr;
      T* pgA = mask[1] ? gA.data_ptr<T>() : nullptr;
      T* pgw = mask[2] ? gw.data_ptr<T>() : nullptr;
      T* pgb = mask[3] ? gb.data_ptr<T>() : nullptr;
      if (use_avx2()) {
#if FASTSKEL_GC_X86
        gc::avx2::backward<T>(d, gy.data_ptr<T>(), x.data_ptr<T>(), A.data_ptr<T>(), weight.data_ptr<T>(), b, pgx,
                              pgA, pgw, pgb);
#endif
      } else {
        gc::generic::backward<T>(d, gy.data_ptr<T>(), x.data_ptr<T>(), A.data_ptr<T>(), weight.data_ptr<T>(), b, pgx,
                                 pgA, pgw, pgb);
      }
    });
  }
  auto back = [&](const at::Tensor& t, bool m) { return (m && ct != st) ? t.to(st) : t; };
  return {back(gx, mask[0]), back(gA, mask[1]), back(gw, mask[2]), back(gb, mask[3])};
}

}  // namespace fastskel

TORCH_LIBRARY_IMPL(fastskel, CPU, m) {
  m.impl("graph_conv", &fastskel::graph_conv_cpu);
  m.impl("graph_conv_backward", &fastskel::graph_conv_backward_cpu);
}

#else  // FASTSKEL_GC_KERNEL_PASS ---------------------------------------------------------------------
// Kernels, compiled once per SIMD policy `Simd<T>` (V, W, zero, set1, load, load_n, store, store_n,
// fma, hsum) of the enclosing namespace. Matrices are row-major; "ld" is the row stride.

// C[i, j] = (C[i, j] if accumulate, else rowinit[i] or 0) + sum_p A[i, p] B[p, j] on an MR x (NV*W)
// tile; the last vector holds `last` valid columns when PARTIAL.
template <typename T, int MR, int NV, bool PARTIAL>
inline void gemm_nn_tile(int64_t Kd, const T* A, int64_t lda, const T* B, int64_t ldb, T* C, int64_t ldc,
                         const T* rowinit, bool accumulate, int last) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int W = S::W;
  V acc[MR][NV];
  for (int i = 0; i < MR; ++i) {
    const V init = rowinit ? S::set1(rowinit[i]) : S::zero();
    for (int j = 0; j < NV; ++j) {
      if (!accumulate) acc[i][j] = init;
      else acc[i][j] = (PARTIAL && j == NV - 1) ? S::load_n(C + i * ldc + j * W, last) : S::load(C + i * ldc + j * W);
    }
  }
  for (int64_t p = 0; p < Kd; ++p) {
    const T* b = B + p * ldb;
    V bv[NV];
    for (int j = 0; j < NV; ++j) bv[j] = (PARTIAL && j == NV - 1) ? S::load_n(b + j * W, last) : S::load(b + j * W);
    for (int i = 0; i < MR; ++i) {
      const V a = S::set1(A[i * lda + p]);
      for (int j = 0; j < NV; ++j) acc[i][j] = S::fma(a, bv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NV; ++j) {
      if (PARTIAL && j == NV - 1) S::store_n(C + i * ldc + j * W, acc[i][j], last);
      else S::store(C + i * ldc + j * W, acc[i][j]);
    }
}

template <typename T, int MR>
inline void gemm_nn_rows(int nv, bool partial, int64_t Kd, const T* A, int64_t lda, const T* B, int64_t ldb, T* C,
                         int64_t ldc, const T* rowinit, bool accumulate, int last) {
  switch (nv * 2 + (partial ? 1 : 0)) {
    case 2: gemm_nn_tile<T, MR, 1, false>(Kd, A, lda, B, ldb, C, ldc, rowinit, accumulate, last); break;
    case 3: gemm_nn_tile<T, MR, 1, true>(Kd, A, lda, B, ldb, C, ldc, rowinit, accumulate, last); break;
    case 4: gemm_nn_tile<T, MR, 2, false>(Kd, A, lda, B, ldb, C, ldc, rowinit, accumulate, last); break;
    case 5: gemm_nn_tile<T, MR, 2, true>(Kd, A, lda, B, ldb, C, ldc, rowinit, accumulate, last); break;
    case 6: gemm_nn_tile<T, MR, 3, false>(Kd, A, lda, B, ldb, C, ldc, rowinit, accumulate, last); break;
    default: gemm_nn_tile<T, MR, 3, true>(Kd, A, lda, B, ldb, C, ldc, rowinit, accumulate, last); break;
  }
}

// C (M x N) = (C if accumulate, else rowinit) + A (M x Kd) @ B (Kd x N).
template <typename T>
void gemm_nn(int64_t M, int64_t N, int64_t Kd, const T* A, int64_t lda, const T* B, int64_t ldb, T* C, int64_t ldc,
             const T* rowinit, bool accumulate = false) {
  constexpr int W = Simd<T>::W;
  constexpr int NR = 3 * W;
  constexpr int MR = 4;
  for (int64_t j0 = 0; j0 < N; j0 += NR) {
    const int64_t nc = std::min<int64_t>(NR, N - j0);
    const int nv = static_cast<int>((nc + W - 1) / W);
    const int last = static_cast<int>(nc - (nv - 1) * W);
    const bool partial = last < W;
    for (int64_t i0 = 0; i0 < M; i0 += MR) {
      const T* a = A + i0 * lda;
      T* c = C + i0 * ldc + j0;
      const T* ri = rowinit ? rowinit + i0 : nullptr;
      switch (std::min<int64_t>(MR, M - i0)) {
        case 4: gemm_nn_rows<T, 4>(nv, partial, Kd, a, lda, B + j0, ldb, c, ldc, ri, accumulate, last); break;
        case 3: gemm_nn_rows<T, 3>(nv, partial, Kd, a, lda, B + j0, ldb, c, ldc, ri, accumulate, last); break;
        case 2: gemm_nn_rows<T, 2>(nv, partial, Kd, a, lda, B + j0, ldb, c, ldc, ri, accumulate, last); break;
        default: gemm_nn_rows<T, 1>(nv, partial, Kd, a, lda, B + j0, ldb, c, ldc, ri, accumulate, last); break;
      }
    }
  }
}

// Joint aggregation of R rows: out[r][w] = sum_{k<nk} sum_v in[r][k*in_ks + v] Ap[k][v][wb + w] for
// the NV*W columns starting at wb; Ap is (nk, V, Vp), zero-padded to Vp columns.
template <typename T, int R, int NV, bool PARTIAL>
inline void agg_tile(const T* const* in, int64_t in_ks, int64_t nk, const T* Ap, int64_t V, int64_t Vp, int64_t wb,
                     T* const* out, int last) {
  using S = Simd<T>;
  using Vec = typename S::V;
  constexpr int W = S::W;
  Vec acc[R][NV];
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < NV; ++j) acc[i][j] = S::zero();
  for (int64_t k = 0; k < nk; ++k) {
    const T* Ak = Ap + k * V * Vp + wb;
    for (int64_t v = 0; v < V; ++v) {
      Vec xb[R];
      for (int i = 0; i < R; ++i) xb[i] = S::set1(in[i][k * in_ks + v]);
      const T* arow = Ak + v * Vp;
      for (int j = 0; j < NV; ++j) {
        const Vec a = S::load(arow + j * W);
        for (int i = 0; i < R; ++i) acc[i][j] = S::fma(xb[i], a, acc[i][j]);
      }
    }
  }
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < NV; ++j) {
      if (PARTIAL && j == NV - 1) S::store_n(out[i] + wb + j * W, acc[i][j], last);
      else S::store(out[i] + wb + j * W, acc[i][j]);
    }
}

template <typename T, int R>
inline void agg_rows_nv(int nv, bool partial, const T* const* in, int64_t in_ks, int64_t nk, const T* Ap, int64_t V,
                        int64_t Vp, int64_t wb, T* const* out, int last) {
  switch (nv * 2 + (partial ? 1 : 0)) {
    case 2: agg_tile<T, R, 1, false>(in, in_ks, nk, Ap, V, Vp, wb, out, last); break;
    case 3: agg_tile<T, R, 1, true>(in, in_ks, nk, Ap, V, Vp, wb, out, last); break;
    case 4: agg_tile<T, R, 2, false>(in, in_ks, nk, Ap, V, Vp, wb, out, last); break;
    case 5: agg_tile<T, R, 2, true>(in, in_ks, nk, Ap, V, Vp, wb, out, last); break;
    case 6: agg_tile<T, R, 3, false>(in, in_ks, nk, Ap, V, Vp, wb, out, last); break;
    case 7: agg_tile<T, R, 3, true>(in, in_ks, nk, Ap, V, Vp, wb, out, last); break;
    case 8: agg_tile<T, R, 4, false>(in, in_ks, nk, Ap, V, Vp, wb, out, last); break;
    default: agg_tile<T, R, 4, true>(in, in_ks, nk, Ap, V, Vp, wb, out, last); break;
  }
}

// Rows indexed (o, i), o < n_outer, i < n_inner: in row at in + o*in_os + i*in_is (+ k*in_ks for
// the k-th operand), out row at out + o*out_os + i*out_is; out row = sum_k in_k row @ Ap[k].
template <typename T>
void agg_rows(int64_t n_outer, int64_t n_inner, const T* in, int64_t in_os, int64_t in_is, int64_t in_ks, int64_t nk,
              const T* Ap, int64_t V, int64_t Vp, T* out, int64_t out_os, int64_t out_is) {
  constexpr int W = Simd<T>::W;
  constexpr int RB = 3;
  constexpr int NVB = 4;
  const int64_t rows = n_outer * n_inner;
  for (int64_t wb = 0; wb < V; wb += NVB * W) {
    const int64_t wc = std::min<int64_t>(NVB * W, V - wb);
    const int nv = static_cast<int>((wc + W - 1) / W);
    const int last = static_cast<int>(wc - (nv - 1) * W);
    const bool partial = last < W;
    for (int64_t r0 = 0; r0 < rows; r0 += RB) {
      const int rb = static_cast<int>(std::min<int64_t>(RB, rows - r0));
      const T* ip[RB];
      T* op[RB];
      for (int i = 0; i < rb; ++i) {
        const int64_t o = (r0 + i) / n_inner, ii = (r0 + i) % n_inner;
        ip[i] = in + o * in_os + ii * in_is;
        op[i] = out + o * out_os + ii * out_is;
      }
      if (rb == 3) agg_rows_nv<T, 3>(nv, partial, ip, in_ks, nk, Ap, V, Vp, wb, op, last);
      else if (rb == 2) agg_rows_nv<T, 2>(nv, partial, ip, in_ks, nk, Ap, V, Vp, wb, op, last);
      else agg_rows_nv<T, 1>(nv, partial, ip, in_ks, nk, Ap, V, Vp, wb, op, last);
    }
  }
}

// acc[v][w] += sum over rows (o, i) of X[row][v] * G[row][w] for v in [v0, v0+VB), the NV*W columns
// from wb. acc is (V, Vp); G rows may be read up to Vp columns (callers keep slack after G).
template <typename T, int VB, int NV>
inline void gram_tile(int64_t n_outer, int64_t n_inner, const T* X, int64_t x_os, int64_t x_is, const T* G,
                      int64_t g_os, int64_t g_is, int64_t v0, int64_t wb, T* acc, int64_t Vp) {
  using S = Simd<T>;
  using Vec = typename S::V;
  constexpr int W = S::W;
  Vec a[VB][NV];
  for (int b = 0; b < VB; ++b)
    for (int j = 0; j < NV; ++j) a[b][j] = S::load(acc + (v0 + b) * Vp + wb + j * W);
  for (int64_t o = 0; o < n_outer; ++o) {
    const T* xo = X + o * x_os + v0;
    const T* go = G + o * g_os + wb;
    for (int64_t i = 0; i < n_inner; ++i) {
      const T* xr = xo + i * x_is;
      const T* gr = go + i * g_is;
      Vec xb[VB];
      for (int b = 0; b < VB; ++b) xb[b] = S::set1(xr[b]);
      for (int j = 0; j < NV; ++j) {
        const Vec g = S::load(gr + j * W);
        for (int b = 0; b < VB; ++b) a[b][j] = S::fma(xb[b], g, a[b][j]);
      }
    }
  }
  for (int b = 0; b < VB; ++b)
    for (int j = 0; j < NV; ++j) S::store(acc + (v0 + b) * Vp + wb + j * W, a[b][j]);
}

template <typename T, int VB>
inline void gram_nv(int nv, int64_t n_outer, int64_t n_inner, const T* X, int64_t x_os, int64_t x_is, const T* G,
                    int64_t g_os, int64_t g_is, int64_t v0, int64_t wb, T* acc, int64_t Vp) {
  switch (nv) {
    case 1: gram_tile<T, VB, 1>(n_outer, n_inner, X, x_os, x_is, G, g_os, g_is, v0, wb, acc, Vp); break;
    case 2: gram_tile<T, VB, 2>(n_outer, n_inner, X, x_os, x_is, G, g_os, g_is, v0, wb, acc, Vp); break;
    case 3: gram_tile<T, VB, 3>(n_outer, n_inner, X, x_os, x_is, G, g_os, g_is, v0, wb, acc, Vp); break;
    default: gram_tile<T, VB, 4>(n_outer, n_inner, X, x_os, x_is, G, g_os, g_is, v0, wb, acc, Vp); break;
  }
}

template <typename T>
void gram(int64_t n_outer, int64_t n_inner, const T* X, int64_t x_os, int64_t x_is, const T* G, int64_t g_os,
          int64_t g_is, int64_t V, T* acc, int64_t Vp) {
  constexpr int W = Simd<T>::W;
  constexpr int NVB = 4;
  for (int64_t wb = 0; wb < V; wb += NVB * W) {
    const int nv = static_cast<int>((std::min<int64_t>(NVB * W, V - wb) + W - 1) / W);
    for (int64_t v0 = 0; v0 < V; v0 += 3) {
      switch (std::min<int64_t>(3, V - v0)) {
        case 3: gram_nv<T, 3>(nv, n_outer, n_inner, X, x_os, x_is, G, g_os, g_is, v0, wb, acc, Vp); break;
        case 2: gram_nv<T, 2>(nv, n_outer, n_inner, X, x_os, x_is, G, g_os, g_is, v0, wb, acc, Vp); break;
        default: gram_nv<T, 1>(nv, n_outer, n_inner, X, x_os, x_is, G, g_os, g_is, v0, wb, acc, Vp); break;
      }
    }
  }
}

// dst[p][r] = src[r][p] for r < R, p < P (small blocks, so both sides stay in L1).
template <typename T>
void transpose(int64_t R, int64_t P, const T* src, int64_t lds, T* dst, int64_t ldd) {
  constexpr int64_t B = 16;
  for (int64_t r0 = 0; r0 < R; r0 += B)
    for (int64_t p0 = 0; p0 < P; p0 += B) {
      const int64_t r1 = std::min(R, r0 + B), p1 = std::min(P, p0 + B);
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t p = p0; p < p1; ++p) dst[p * ldd + r] = src[r * lds + p];
    }
}

// Per-call constants: A padded to Vp columns (and transposed), the k-concatenated weights with the
// bias as channel C_in, and the aggregated ones-channel s_k[w] = sum_v A[k][v][w].
template <typename T>
struct Prepared {
  int64_t Vp, Cp;
  std::vector<T> Ap, ATp, Wc, WcT, WT, s;

  Prepared(const Dims& d, const T* A, const T* weight, const T* bias) {
    constexpr int W = Simd<T>::W;
    const int64_t K = d.K, V = d.V, Cin = d.Cin, Cout = d.Cout;
    Vp = (V + W - 1) / W * W;
    Cp = d.Cp();
    Ap.assign(K * V * Vp, T(0));
    ATp.assign(K * V * Vp, T(0));
    s.assign(K * V, T(0));
    for (int64_t k = 0; k < K; ++k)
      for (int64_t v = 0; v < V; ++v)
        for (int64_t w = 0; w < V; ++w) {
          const T a = A[(k * V + v) * V + w];
          Ap[(k * V + v) * Vp + w] = a;
          ATp[(k * V + w) * Vp + v] = a;
          s[k * V + w] += a;
        }
    // Wc[c][k*Cp + ci] = W'[k][c][ci]; WcT is its transpose (K*Cp, Cout).
    Wc.assign(Cout * K * Cp, T(0));
    WcT.assign(K * Cp * Cout, T(0));
    WT.assign(Cin * K * Cout, T(0));
    for (int64_t o = 0; o < K * Cout; ++o)
      for (int64_t ci = 0; ci < Cin; ++ci) WT[ci * K * Cout + o] = weight[o * Cin + ci];
    for (int64_t k = 0; k < K; ++k)
      for (int64_t c = 0; c < Cout; ++c) {
        for (int64_t ci = 0; ci < Cin; ++ci) {
          const T w = weight[(k * Cout + c) * Cin + ci];
          Wc[c * K * Cp + k * Cp + ci] = w;
          WcT[(k * Cp + ci) * Cout + c] = w;
        }
        if (d.has_bias) {
          Wc[c * K * Cp + k * Cp + Cin] = bias[k * Cout + c];
          WcT[(k * Cp + Cin) * Cout + c] = bias[k * Cout + c];
        }
      }
  }

  // Z buffer (K*Cp rows of ldz = tc_max*V): the ones-channel rows hold s_k for every frame.
  std::vector<T> z_buffer(const Dims& d, int64_t tc_max) const {
    const int64_t ldz = tc_max * d.V;
    std::vector<T> z(d.K * Cp * ldz + Vp + Simd<T>::W, T(0));
    if (d.has_bias)
      for (int64_t k = 0; k < d.K; ++k)
        for (int64_t t = 0; t < tc_max; ++t)
          std::copy(s.begin() + k * d.V, s.begin() + (k + 1) * d.V, z.begin() + (k * Cp + d.Cin) * ldz + t * d.V);
    return z;
  }
};

// Z rows (k, ci < C_in, t) = x[ci, t0 + t, :] @ A_k for the tc frames of a chunk.
template <typename T>
inline void expand_chunk(const Dims& d, const Prepared<T>& pr, const T* xn, int64_t t0, int64_t tc, T* Z,
                         int64_t ldz) {
  const int64_t TV = d.T * d.V;
  for (int64_t k = 0; k < d.K; ++k)
    agg_rows<T>(d.Cin, tc, xn + t0 * d.V, TV, d.V, 0, 1, pr.Ap.data() + k * d.V * pr.Vp, d.V, pr.Vp,
                Z + k * pr.Cp * ldz, ldz, d.V);
}

template <typename T>
void forward(const Dims& d, const T* x, const T* A, const T* weight, const T* bias, T* y) {
  const Prepared<T> pr(d, A, weight, bias);
  const int64_t TV = d.T * d.V, V = d.V;
  const bool agg_first = forward_aggregate_first(d);
  const int64_t tc_max = agg_first ? frames_per_chunk(d.K * pr.Cp, V, d.T, sizeof(T))
                                   : frames_per_chunk(d.K * d.Cout, V, d.T, sizeof(T));
  const int64_t ld = tc_max * V;
  at::parallel_for(0, d.N, 1, [&](int64_t n0, int64_t n1) {
    if (agg_first) {
      std::vector<T> Z = pr.z_buffer(d, tc_max);
      for (int64_t n = n0; n < n1; ++n) {
        const T* xn = x + n * d.Cin * TV;
        T* yn = y + n * d.Cout * TV;
        for (int64_t t0 = 0; t0 < d.T; t0 += tc_max) {
          const int64_t tc = std::min(tc_max, d.T - t0);
          expand_chunk<T>(d, pr, xn, t0, tc, Z.data(), ld);
          gemm_nn<T>(d.Cout, tc * V, d.K * pr.Cp, pr.Wc.data(), d.K * pr.Cp, Z.data(), ld, yn + t0 * V, TV, nullptr);
        }
      }
    } else {
      std::vector<T> H(d.K * d.Cout * ld + pr.Vp);
      for (int64_t n = n0; n < n1; ++n) {
        const T* xn = x + n * d.Cin * TV;
        T* yn = y + n * d.Cout * TV;
        for (int64_t t0 = 0; t0 < d.T; t0 += tc_max) {
          const int64_t tc = std::min(tc_max, d.T - t0);
          gemm_nn<T>(d.K * d.Cout, tc * V, d.Cin, weight, d.Cin, xn + t0 * V, TV, H.data(), ld, bias);
          agg_rows<T>(d.Cout, tc, H.data(), ld, V, d.Cout * ld, d.K, pr.Ap.data(), V, pr.Vp, yn + t0 * V, TV, V);
        }
      }
    }
  });
}

template <typename T>
void backward_aggregate(const Dims& d, const Prepared<T>& pr, const T* gy, const T* x, T* gx, T* gA, T* gw, T* gb) {
  const int64_t TV = d.T * d.V, V = d.V, K = d.K, Cp = pr.Cp, Vp = pr.Vp;
  const bool need_g = gx != nullptr || gA != nullptr;
  const bool need_w = gw != nullptr || gb != nullptr;
  const int64_t tc_max = frames_per_chunk(K * Cp, V, d.T, sizeof(T));
  const int64_t ld = tc_max * V;
  const int nslots = std::max(1, at::get_num_threads());
  // Per-thread partial sums, reduced in slot order below (deterministic for a fixed thread count).
  std::vector<T> accA(gA ? size_t(nslots) * (K * V * Vp + K * Vp) : 0, T(0));
  std::vector<T> accW(need_w ? size_t(nslots) * d.Cout * K * Cp : 0, T(0));
  at::parallel_for(0, d.N, 1, [&](int64_t n0, int64_t n1) {
    const int slot = std::min(nslots - 1, std::max(0, at::get_thread_num()));
    std::vector<T> G(need_g ? K * Cp * ld + Vp + Simd<T>::W : 0, T(0));
    std::vector<T> Z = need_w ? pr.z_buffer(d, tc_max) : std::vector<T>();
    std::vector<T> Zt(need_w ? ld * K * Cp : 0);
    T* aA = gA ? accA.data() + size_t(slot) * (K * V * Vp + K * Vp) : nullptr;
    T* aB = gA ? aA + K * V * Vp : nullptr;
    T* aW = need_w ? accW.data() + size_t(slot) * d.Cout * K * Cp : nullptr;
    for (int64_t n = n0; n < n1; ++n) {
      const T* xn = x + n * d.Cin * TV;
      const T* gyn = gy + n * d.Cout * TV;
      for (int64_t t0 = 0; t0 < d.T; t0 += tc_max) {
        const int64_t tc = std::min(tc_max, d.T - t0);
        const T* gyc = gyn + t0 * V;
        if (need_g) {
          gemm_nn<T>(K * Cp, tc * V, d.Cout, pr.WcT.data(), d.Cout, gyc, TV, G.data(), ld, nullptr);
          if (gx)
            agg_rows<T>(d.Cin, tc, G.data(), ld, V, Cp * ld, K, pr.ATp.data(), V, Vp, gx + n * d.Cin * TV + t0 * V,
                        TV, V);
          if (gA) {
            for (int64_t k = 0; k < K; ++k) {
              gram<T>(d.Cin, tc, xn + t0 * V, TV, V, G.data() + k * Cp * ld, ld, V, V, aA + k * V * Vp, Vp);
              if (d.has_bias) {
                const T* g1 = G.data() + (k * Cp + d.Cin) * ld;
                T* b = aB + k * Vp;
                for (int64_t t = 0; t < tc; ++t)
                  for (int64_t w = 0; w < V; ++w) b[w] += g1[t * V + w];
              }
            }
          }
        }
        if (need_w) {
          expand_chunk<T>(d, pr, xn, t0, tc, Z.data(), ld);
          transpose<T>(K * Cp, tc * V, Z.data(), ld, Zt.data(), K * Cp);
          gemm_nn<T>(d.Cout, K * Cp, tc * V, gyc, TV, Zt.data(), K * Cp, aW, K * Cp, nullptr, true);
        }
      }
    }
  });
  if (gA) {
    for (int64_t k = 0; k < K; ++k)
      for (int64_t v = 0; v < V; ++v)
        for (int64_t w = 0; w < V; ++w) {
          T sacc = 0;
          for (int sl = 0; sl < nslots; ++sl) {
            const T* a = accA.data() + size_t(sl) * (K * V * Vp + K * Vp);
            sacc += a[(k * V + v) * Vp + w] + a[K * V * Vp + k * Vp + w];
          }
          gA[(k * V + v) * V + w] = sacc;
        }
  }
  if (need_w) {
    for (int64_t c = 0; c < d.Cout; ++c)
      for (int64_t k = 0; k < K; ++k)
        for (int64_t ci = 0; ci < Cp; ++ci) {
          T sacc = 0;
          for (int sl = 0; sl < nslots; ++sl) sacc += accW[size_t(sl) * d.Cout * K * Cp + c * K * Cp + k * Cp + ci];
          if (ci < d.Cin) {
            if (gw) gw[(k * d.Cout + c) * d.Cin + ci] = sacc;
          } else if (gb) {
            gb[k * d.Cout + c] = sacc;
          }
        }
  }
}

// Backward in the mix-first order (cheaper when C_in > C_out): GH_k = gy A_k^T per chunk, then
// grad_x = W^T GH, grad_W += GH x^T, grad_b += rowsum(GH), grad_A_k^T += gy^T H_k with H = Wx + b.
template <typename T>
void backward_mix(const Dims& d, const Prepared<T>& pr, const T* gy, const T* x, const T* weight, const T* bias,
                  T* gx, T* gA, T* gw, T* gb) {
  const int64_t TV = d.T * d.V, V = d.V, K = d.K, Cin = d.Cin, Cout = d.Cout, Vp = pr.Vp;
  const bool need_gh = gx != nullptr || gw != nullptr || gb != nullptr;
  const bool need_w = gw != nullptr || gb != nullptr;
  const int64_t tc_max = frames_per_chunk(K * Cout, V, d.T, sizeof(T));
  const int64_t ld = tc_max * V;
  const int nslots = std::max(1, at::get_num_threads());
  const size_t slotA = size_t(K * V * Vp), slotW = size_t(K * Cout * (Cin + 1));
  std::vector<T> accA(gA ? nslots * slotA : 0, T(0));
  std::vector<T> accW(need_w ? nslots * slotW : 0, T(0));
  at::parallel_for(0, d.N, 1, [&](int64_t n0, int64_t n1) {
    const int slot = std::min(nslots - 1, std::max(0, at::get_thread_num()));
    std::vector<T> GH(need_gh ? K * Cout * ld + Vp + Simd<T>::W : 0, T(0));
    std::vector<T> H(gA ? K * Cout * ld + Vp + Simd<T>::W : 0, T(0));
    std::vector<T> Xt(need_w ? ld * (Cin + 1) : 0, T(1));  // [tc*V][C_in + 1], last column stays 1
    T* aA = gA ? accA.data() + slot * slotA : nullptr;   // grad_A_k transposed: aA[k][w][v]
    T* aW = need_w ? accW.data() + slot * slotW : nullptr;  // [K*C_out][C_in + 1], last column: bias
    for (int64_t n = n0; n < n1; ++n) {
      const T* xn = x + n * Cin * TV;
      const T* gyn = gy + n * Cout * TV;
      for (int64_t t0 = 0; t0 < d.T; t0 += tc_max) {
        const int64_t tc = std::min(tc_max, d.T - t0);
        const T* gyc = gyn + t0 * V;
        if (need_gh) {
          for (int64_t k = 0; k < K; ++k)
            agg_rows<T>(Cout, tc, gyc, TV, V, 0, 1, pr.ATp.data() + k * V * Vp, V, Vp, GH.data() + k * Cout * ld, ld,
                        V);
          if (gx) gemm_nn<T>(Cin, tc * V, K * Cout, pr.WT.data(), K * Cout, GH.data(), ld, gx + n * Cin * TV + t0 * V,
                             TV, nullptr);
          if (need_w) {
            transpose<T>(Cin, tc * V, xn + t0 * V, TV, Xt.data(), Cin + 1);
            gemm_nn<T>(K * Cout, Cin + 1, tc * V, GH.data(), ld, Xt.data(), Cin + 1, aW, Cin + 1, nullptr, true);
          }
        }
        if (gA) {
          gemm_nn<T>(K * Cout, tc * V, Cin, weight, Cin, xn + t0 * V, TV, H.data(), ld, bias);
          for (int64_t k = 0; k < K; ++k)
            gram<T>(Cout, tc, gyc, TV, V, H.data() + k * Cout * ld, ld, V, V, aA + k * V * Vp, Vp);
        }
      }
    }
  });
  if (gA)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t v = 0; v < V; ++v)
        for (int64_t w = 0; w < V; ++w) {
          T sacc = 0;
          for (int sl = 0; sl < nslots; ++sl) sacc += accA[sl * slotA + (k * V + w) * Vp + v];
          gA[(k * V + v) * V + w] = sacc;
        }
  if (need_w)
    for (int64_t o = 0; o < K * Cout; ++o)
      for (int64_t ci = 0; ci <= Cin; ++ci) {
        T sacc = 0;
        for (int sl = 0; sl < nslots; ++sl) sacc += accW[sl * slotW + o * (Cin + 1) + ci];
        if (ci < Cin && gw) gw[o * Cin + ci] = sacc;
        if (ci == Cin && gb) gb[o] = sacc;
      }
}

template <typename T>
void backward(const Dims& d, const T* gy, const T* x, const T* A, const T* weight, const T* bias, T* gx, T* gA,
              T* gw, T* gb) {
  const Prepared<T> pr(d, A, weight, bias);
  if (backward_aggregate_first(d, gx != nullptr, gA != nullptr, gw != nullptr || gb != nullptr))
    backward_aggregate<T>(d, pr, gy, x, gx, gA, gw, gb);
  else
    backward_mix<T>(d, pr, gy, x, weight, bias, gx, gA, gw, gb);
}

template void forward<float>(const Dims&, const float*, const float*, const float*, const float*, float*);
template void forward<double>(const Dims&, const double*, const double*, const double*, const double*, double*);
template void backward<float>(const Dims&, const float*, const float*, const float*, const float*, const float*,
                              float*, float*, float*, float*);
template void backward<double>(const Dims&, const double*, const double*, const double*, const double*,
                               const double*, double*, double*, double*, double*);

#endif  // FASTSKEL_GC_KERNEL_PASS
