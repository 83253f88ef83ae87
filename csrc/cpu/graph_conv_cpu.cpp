// CPU implementation of fastskel::graph_conv (forward).
#include <ATen/ATen.h>
#include <torch/library.h>

namespace fastskel {

at::Tensor graph_conv_cpu(const at::Tensor& x, const at::Tensor& A, const at::Tensor& weight,
                          const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.dim() == 4, "graph_conv: x: expected (N, C_in, T, V), got ", x.sizes());
  TORCH_CHECK(A.dim() == 3, "graph_conv: A: expected (K, V, V), got ", A.sizes());
  TORCH_CHECK(weight.dim() == 2, "graph_conv: weight: expected (K*C_out, C_in), got ", weight.sizes());
  const int64_t N = x.size(0), Cin = x.size(1), T = x.size(2), V = x.size(3);
  const int64_t K = A.size(0);
  TORCH_CHECK(A.size(1) == V && A.size(2) == V, "graph_conv: A: expected (K, ", V, ", ", V, "), got ", A.sizes());
  TORCH_CHECK(weight.size(1) == Cin && weight.size(0) % K == 0,
              "graph_conv: weight: expected (K*C_out, ", Cin, "), got ", weight.sizes());
  const int64_t Cout = weight.size(0) / K;
  // Channel mix: h = W x (+ b)  -> (N, K*Cout, T*V)
  at::Tensor h = at::matmul(weight, x.reshape({N, Cin, T * V}));
  if (bias.has_value() && bias->defined()) {
    h = h + bias->view({1, K * Cout, 1});
  }
  // Joint aggregation: (N*Cout*T, K*V) @ (K*V, V)
  at::Tensor hk = h.view({N, K, Cout, T, V}).permute({0, 2, 3, 1, 4}).reshape({N * Cout * T, K * V});
  return at::matmul(hk, A.reshape({K * V, V})).view({N, Cout, T, V});
}

}  // namespace fastskel

TORCH_LIBRARY_IMPL(fastskel, CPU, m) { m.impl("graph_conv", &fastskel::graph_conv_cpu); }
