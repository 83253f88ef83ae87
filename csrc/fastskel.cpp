// fastskel._C: operator schemas (TORCH_LIBRARY) and the Python module.
// Implementations are registered per dispatch key in cpu/ and cuda/.
#include <torch/extension.h>
#include <torch/library.h>

#include <string>
#include <vector>

TORCH_LIBRARY(fastskel, m) {
  // st-gcn ConvTemporalGraphical: y[n,c,t,w] = sum_k sum_v (W_k x + b_k)[n,c,t,v] A[k,v,w]
  m.def("graph_conv(Tensor x, Tensor A, Tensor weight, Tensor? bias) -> Tensor");
  // Gradients (grad_x, grad_A, grad_weight, grad_bias) for the true entries of output_mask; the
  // others (and grad_bias when bias is None) are returned as empty (0-element) tensors.
  m.def(
      "graph_conv_backward(Tensor grad_out, Tensor x, Tensor A, Tensor weight, Tensor? bias, bool[4] output_mask)"
      " -> (Tensor, Tensor, Tensor, Tensor)");
  // st-gcn block tail: y = act(x * m / (1 - p) + residual), m from a counter-based RNG seeded by
  // `seed` (a one-element int64 CPU tensor), so the backward regenerates m instead of storing it.
  m.def("dropout_add_relu(Tensor x, Tensor? residual, float p, Tensor seed, bool relu) -> Tensor");
  // (grad_x, grad_residual); grad_residual is empty (0 elements) when has_residual is false.
  m.def(
      "dropout_add_relu_backward(Tensor grad, Tensor out, float p, Tensor seed, bool relu, bool has_residual)"
      " -> (Tensor, Tensor)");
}

namespace {
std::vector<std::string> compiled_ops() {
  return {"graph_conv", "graph_conv_backward", "dropout_add_relu", "dropout_add_relu_backward"};
}

bool cuda_compiled() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}
}  // namespace

namespace fastskel {
// csrc/cpu/ntu_parser.cpp: NTU .skeleton files -> [(ok, (3, T, J, M) float32 array | None, error, line)]
pybind11::list read_ntu_skeletons(const std::vector<std::string>& paths, int64_t num_threads, int64_t max_bodies,
                                  int64_t num_joints);
}  // namespace fastskel

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fastskel C++/CUDA extension: graph convolution and fused dropout ops (torch.ops.fastskel.*)";
  m.def("compiled_ops", &compiled_ops, "names of the ops registered under torch.ops.fastskel");
  m.def("cuda_compiled", &cuda_compiled, "whether CUDA kernels were compiled in");
  m.def("read_ntu_skeletons", &fastskel::read_ntu_skeletons, pybind11::arg("paths"), pybind11::arg("num_threads") = 0,
        pybind11::arg("max_bodies") = 2, pybind11::arg("num_joints") = 25,
        "parse NTU RGB+D .skeleton files in parallel (GIL released); per file (ok, array (3, T, J, M) float32 "
        "or None, error message, line)");
}
