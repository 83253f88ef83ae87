// CPU implementation of fastskel::dropout_add_relu and fastskel::dropout_add_relu_backward.
//
//   y = act(x * m / (1 - p) + residual),   m_i = [u_i < (1 - p) * 2^32],   act = ReLU or identity
//
// st-gcn's block tail (Dropout -> + residual -> ReLU) in one pass. The keep mask is never stored:
// u_i is a counter-based random number, a keyed hash of the element index i (two rounds of
// Wellons' lowbias32 mixer, keyed by the 64-bit `seed`; see keep_flags), so any thread can compute
// any element, the result does not depend on the number of threads, and the backward regenerates
// the mask from the seed:
//   g_pre = ReLU ? grad * [y > 0] : grad;   grad_residual = g_pre;   grad_x = g_pre * m / (1 - p).
// fastskel.ops.reference.dropout_keep_mask computes the same m in PyTorch integer arithmetic.
// fp32 / fp64 natively; fp16 / bf16 are computed in fp32 and rounded once.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <algorithm>
#include <cstdint>
#include <tuple>
#include <type_traits>

namespace fastskel {
namespace {

// Wellons' "lowbias32" integer mixer (a bijection of uint32).
inline uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

// Elements are kept when u < threshold = min(round((1 - p) * 2^32), 2^32 - 1); p == 0 keeps all.
inline uint32_t keep_threshold(double p) {
  const double t = std::nearbyint((1.0 - p) * 4294967296.0);
  return t <= 0.0 ? 0U : (t >= 4294967295.0 ? 0xFFFFFFFFU : static_cast<uint32_t>(t));
}

inline uint64_t read_seed(const at::Tensor& seed) {
  TORCH_CHECK(seed.numel() == 1 && !seed.is_floating_point() && seed.device().is_cpu(),
              "fastskel::dropout_add_relu: seed: expected a one-element integer CPU tensor, got ",
              seed.sizes(), " ", seed.dtype(), " on ", seed.device());
  return static_cast<uint64_t>(seed.item<int64_t>());
}

// The keep mask of one call: seed, threshold, p (p == 0 keeps every element).
struct Mask {
  uint64_t seed;
  uint32_t thresh;
  bool keep_all;
  double p;
};

inline Mask make_mask(double p, const at::Tensor& seed) { return {read_seed(seed), keep_threshold(p), p == 0.0, p}; }

// m[j] = 1 if element begin + j is kept, else 0, for j < len <= kBlock.
//   u_i = mix32(mix32(lo32(i) ^ k0) + k1 + hi32(i) * 0x9E3779B9),  (k0, k1) = (lo32, hi32) of the seed.
// 32-bit lanes and branch-free, so the loop vectorises; compiled for AVX2 too and picked at run time.
constexpr int64_t kBlock = 1024;

__attribute__((target_clones("avx2", "default")))
void keep_flags(const Mask& mask, int64_t begin, int64_t len, float* m) {
  const uint64_t seed = mask.seed;
  const uint32_t thresh = mask.thresh;
  const uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  const uint32_t lo = static_cast<uint32_t>(begin);
  const uint32_t hi_term = k1 + static_cast<uint32_t>(static_cast<uint64_t>(begin) >> 32) * 0x9E3779B9U;
  if (mask.keep_all) {
    for (int64_t j = 0; j < len; ++j) m[j] = 1.0f;
    return;
  }
  // A block never straddles a multiple of 2^32 (kGrain and kBlock divide it), so hi32(i) is fixed.
  for (int64_t j = 0; j < len; ++j) {
    const uint32_t u = mix32(mix32((lo + static_cast<uint32_t>(j)) ^ k0) + hi_term);
    m[j] = u < thresh ? 1.0f : 0.0f;
  }
}

constexpr int64_t kGrain = 1 << 15;  // a multiple of kBlock

void check_args(const at::Tensor& x, const c10::optional<at::Tensor>& residual, double p) {
  TORCH_CHECK(p >= 0.0 && p < 1.0, "fastskel::dropout_add_relu: p: expected a value in [0, 1), got ", p);
  if (residual.has_value() && residual->defined()) {
    TORCH_CHECK(residual->sizes() == x.sizes(), "fastskel::dropout_add_relu: residual: expected shape ", x.sizes(),
                " like x, got ", residual->sizes());
    TORCH_CHECK(residual->scalar_type() == x.scalar_type(), "fastskel::dropout_add_relu: residual: expected dtype ",
                x.scalar_type(), " like x, got ", residual->scalar_type());
  }
}

// Calls f(c0, len, m) for the kBlock-aligned pieces [c0, c0 + len) of [b, e) with their keep flags m.
template <typename F>
inline void for_each_block(const Mask& mask, int64_t b, int64_t e, F&& f) {
  float m[kBlock];
  for (int64_t c0 = b; c0 < e; c0 += kBlock) {
    const int64_t len = std::min(kBlock - (c0 % kBlock), e - c0);
    keep_flags(mask, c0, len, m);
    f(c0, len, m);
  }
}

// One pass over [b, e): y = act(x * m * scale + r). Template flags keep the inner loops branch-free.
template <typename scalar_t, bool RELU, bool RES>
void forward_range(const scalar_t* __restrict__ xp, const scalar_t* __restrict__ rp, scalar_t* __restrict__ yp,
                   const Mask& mask, int64_t b, int64_t e) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t scale = static_cast<acc_t>(1.0 / (1.0 - mask.p));
  for_each_block(mask, b, e, [&](int64_t c0, int64_t len, const float* m) {
    for (int64_t j = 0; j < len; ++j) {
      acc_t v = static_cast<acc_t>(xp[c0 + j]) * static_cast<acc_t>(m[j]) * scale;
      if (RES) v += static_cast<acc_t>(rp[c0 + j]);
      if (RELU) v = v > acc_t(0) ? v : acc_t(0);
      yp[c0 + j] = static_cast<scalar_t>(v);
    }
  });
}

// g_pre = RELU ? g * [y > 0] : g;  gr = g_pre (RES);  gx = g_pre * m * scale.
template <typename scalar_t, bool RELU, bool RES>
void backward_range(const scalar_t* __restrict__ gp, const scalar_t* __restrict__ op, scalar_t* __restrict__ gxp,
                    scalar_t* __restrict__ grp, const Mask& mask, int64_t b, int64_t e) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t scale = static_cast<acc_t>(1.0 / (1.0 - mask.p));
  for_each_block(mask, b, e, [&](int64_t c0, int64_t len, const float* m) {
    for (int64_t j = 0; j < len; ++j) {
      acc_t v = static_cast<acc_t>(gp[c0 + j]);
      if (RELU) v = static_cast<acc_t>(op[c0 + j]) > acc_t(0) ? v : acc_t(0);
      if (RES) grp[c0 + j] = static_cast<scalar_t>(v);
      gxp[c0 + j] = static_cast<scalar_t>(v * static_cast<acc_t>(m[j]) * scale);
    }
  });
}

template <typename F>
void dispatch_flags(bool relu, bool res, F&& f) {
  if (relu && res) f(std::true_type{}, std::true_type{});
  else if (relu) f(std::true_type{}, std::false_type{});
  else if (res) f(std::false_type{}, std::true_type{});
  else f(std::false_type{}, std::false_type{});
}

at::Tensor dropout_add_relu_cpu(const at::Tensor& x_, const c10::optional<at::Tensor>& residual_, double p,
                                const at::Tensor& seed_, bool relu) {
  check_args(x_, residual_, p);
  const at::Tensor x = x_.contiguous();
  const bool has_res = residual_.has_value() && residual_->defined();
  const at::Tensor res = has_res ? residual_->contiguous() : at::Tensor();
  at::Tensor y = at::empty_like(x, at::MemoryFormat::Contiguous);
  const Mask mask = make_mask(p, seed_);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dropout_add_relu_cpu", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* rp = has_res ? res.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    dispatch_flags(relu, has_res, [&](auto RELU, auto RES) {
      at::parallel_for(0, x.numel(), kGrain, [&](int64_t b, int64_t e) {
        forward_range<scalar_t, decltype(RELU)::value, decltype(RES)::value>(xp, rp, yp, mask, b, e);
      });
    });
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> dropout_add_relu_backward_cpu(const at::Tensor& grad_, const at::Tensor& out_,
                                                                 double p, const at::Tensor& seed_, bool relu,
                                                                 bool has_residual) {
  TORCH_CHECK(p >= 0.0 && p < 1.0, "fastskel::dropout_add_relu_backward: p: expected a value in [0, 1), got ", p);
  TORCH_CHECK(!relu || out_.sizes() == grad_.sizes(), "fastskel::dropout_add_relu_backward: out: expected shape ",
              grad_.sizes(), " like grad, got ", out_.sizes());
  const at::Tensor g = grad_.contiguous();
  const at::Tensor out = relu ? out_.to(g.scalar_type()).contiguous() : at::Tensor();
  at::Tensor gx = at::empty_like(g, at::MemoryFormat::Contiguous);
  at::Tensor gr = has_residual ? at::empty_like(g, at::MemoryFormat::Contiguous) : g.new_empty({0});
  const Mask mask = make_mask(p, seed_);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "dropout_add_relu_backward_cpu", [&] {
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    const scalar_t* op = relu ? out.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* gxp = gx.mutable_data_ptr<scalar_t>();
    scalar_t* grp = has_residual ? gr.mutable_data_ptr<scalar_t>() : nullptr;
    dispatch_flags(relu, has_residual, [&](auto RELU, auto RES) {
      at::parallel_for(0, g.numel(), kGrain, [&](int64_t b, int64_t e) {
        backward_range<scalar_t, decltype(RELU)::value, decltype(RES)::value>(gp, op, gxp, grp, mask, b, e);
      });
    });
  });
  return {gx, gr};
}

}  // namespace
}  // namespace fastskel

TORCH_LIBRARY_IMPL(fastskel, CPU, m) {
  m.impl("dropout_add_relu", &fastskel::dropout_add_relu_cpu);
  m.impl("dropout_add_relu_backward", &fastskel::dropout_add_relu_backward_cpu);
}
