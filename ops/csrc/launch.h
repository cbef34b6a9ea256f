// Host-side entry points of the CUDA kernels, called from ops.cpp. They take
// the element type as a DType code so that ops.cpp needs no CUDA types and the
// .cu files need no PyTorch headers (which keeps nvcc compile times short).
#pragma once

#include <cuda_runtime_api.h>

#include "bias_act.h"
#include "upfirdn2d.h"

namespace smallgan {

// p must have been planned with upfirdn2d_plan(). Returns the launch error.
cudaError_t launch_upfirdn2d(const Upfirdn2dParams& p, int dtype, cudaStream_t stream);

cudaError_t launch_bias_act(const BiasActParams& p, int dtype, cudaStream_t stream);

}  // namespace smallgan
