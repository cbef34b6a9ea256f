// CUDA kernel for bias_act; the per-element logic lives in bias_act.h.
#include "launch.h"

namespace smallgan {

template <typename T, typename A>
__global__ void bias_act_kernel(BiasActParams p) {
  const int64_t step = (int64_t)blockDim.x * gridDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < p.numel; i += step) {
    bias_act_element<T, A>(p, i);
  }
}

template <typename T, typename A>
static cudaError_t launch(const BiasActParams& p, cudaStream_t stream) {
  const int threads = 256;
  const int64_t max_blocks = 65535 * 8;  // grid-stride loop covers the rest
  int64_t blocks = (p.numel + threads - 1) / threads;
  if (blocks > max_blocks) blocks = max_blocks;
  if (blocks < 1) return cudaSuccess;
  bias_act_kernel<T, A><<<(unsigned)blocks, threads, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t launch_bias_act(const BiasActParams& p, int dtype, cudaStream_t stream) {
  switch (dtype) {
    case kFloat32: return launch<float, float>(p, stream);
    case kFloat64: return launch<double, double>(p, stream);
    case kFloat16: return launch<__half, float>(p, stream);
    case kBFloat16: return launch<__nv_bfloat16, float>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace smallgan
