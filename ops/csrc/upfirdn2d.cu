// CUDA kernel for upfirdn2d; the per-thread logic lives in upfirdn2d.h.
#include "launch.h"

namespace smallgan {

template <typename T, typename A>
__global__ void upfirdn2d_kernel(Upfirdn2dParams p) {
  // Sized at launch: filter, then planes_per_block input tiles (see upfirdn2d.h).
  extern __shared__ __align__(16) unsigned char shared_raw[];
  A* s_f = reinterpret_cast<A*>(shared_raw);
  A* s_x = s_f + p.f_w * p.f_h;
  upfirdn2d_load_filter<A>(p, threadIdx.x, blockDim.x, s_f);
  const Upfirdn2dTile tile = upfirdn2d_tile(p, blockIdx.x);
  for (int group = blockIdx.y; group < p.plane_groups; group += gridDim.y) {
    upfirdn2d_load_tile<T, A>(p, tile, group, threadIdx.x, blockDim.x, s_x);
    __syncthreads();
    upfirdn2d_compute<T, A>(p, tile, group, threadIdx.x, blockDim.x, s_f, s_x);
    __syncthreads();
  }
}

template <typename T, typename A>
static cudaError_t launch(const Upfirdn2dParams& p, cudaStream_t stream) {
  const int max_grid_y = 65535;
  dim3 grid(p.tiles_x * p.tiles_y, p.plane_groups < max_grid_y ? p.plane_groups : max_grid_y);
  upfirdn2d_kernel<T, A><<<grid, p.threads, p.shared_bytes, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t launch_upfirdn2d(const Upfirdn2dParams& p, int dtype, cudaStream_t stream) {
  switch (dtype) {
    case kFloat32: return launch<float, float>(p, stream);
    case kFloat64: return launch<double, double>(p, stream);
    case kFloat16: return launch<__half, float>(p, stream);
    case kBFloat16: return launch<__nv_bfloat16, float>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace smallgan
