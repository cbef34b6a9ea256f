// CPU emulation of the CUDA kernels, for testing their logic on machines
// without a GPU (tests/test_ops_cuda_build.py compiles this with the host
// compiler and calls it through ctypes). Every block runs its threads one
// after the other, phase by phase, where the GPU has a __syncthreads().
#include <cmath>
#include <limits>
#include <vector>

static int sg_violations = 0;
#define SG_ASSERT(cond) \
  do {                  \
    if (!(cond)) ++sg_violations; \
  } while (0)

#include "bias_act.h"
#include "upfirdn2d.h"

using namespace smallgan;

template <typename T, typename A>
static int emulate_upfirdn2d(const T* x, const A* f, T* y, const int64_t* ints, const int64_t* strides, double gain,
                             int64_t max_grid_y, int64_t* plan) {
  Upfirdn2dParams p = {};
  p.x = x;
  p.f = f;
  p.y = y;
  for (int d = 0; d < 4; ++d) {
    p.x_stride[d] = strides[d];
    p.y_stride[d] = strides[4 + d];
  }
  p.batch = (int)ints[0];
  p.channels = (int)ints[1];
  p.in_h = (int)ints[2];
  p.in_w = (int)ints[3];
  p.out_h = (int)ints[4];
  p.out_w = (int)ints[5];
  p.up_x = (int)ints[6];
  p.up_y = (int)ints[7];
  p.down_x = (int)ints[8];
  p.down_y = (int)ints[9];
  p.pad_x0 = (int)ints[10];
  p.pad_y0 = (int)ints[11];
  p.f_h = (int)ints[12];
  p.f_w = (int)ints[13];
  p.f_separable = (int)ints[14];
  p.flip_filter = (int)ints[15];
  p.gain = gain;
  if (!upfirdn2d_plan(p, sizeof(A), 48 * 1024)) return -1;
  plan[0] = p.tile_w;
  plan[1] = p.tile_h;
  plan[2] = p.planes_per_block;
  plan[3] = p.threads;
  plan[4] = p.shared_bytes;

  sg_violations = 0;
  std::vector<A> shared(p.shared_bytes / sizeof(A));
  A* s_f = shared.data();
  A* s_x = s_f + p.f_w * p.f_h;
  const int grid_x = p.tiles_x * p.tiles_y;
  const int grid_y = p.plane_groups < max_grid_y ? p.plane_groups : (int)max_grid_y;
  for (int bx = 0; bx < grid_x; ++bx) {
    for (int by = 0; by < grid_y; ++by) {
      // Shared memory starts as garbage on a GPU; NaN makes stray reads show.
      std::fill(shared.begin(), shared.end(), std::numeric_limits<A>::quiet_NaN());
      for (int tid = 0; tid < p.threads; ++tid) upfirdn2d_load_filter<A>(p, tid, p.threads, s_f);
      const Upfirdn2dTile tile = upfirdn2d_tile(p, bx);
      for (int group = by; group < p.plane_groups; group += grid_y) {
        for (int tid = 0; tid < p.threads; ++tid) upfirdn2d_load_tile<T, A>(p, tile, group, tid, p.threads, s_x);
        for (int tid = 0; tid < p.threads; ++tid) upfirdn2d_compute<T, A>(p, tile, group, tid, p.threads, s_f, s_x);
      }
    }
  }
  return sg_violations;
}

template <typename T>
static void emulate_bias_act(const T* x, const T* b, const T* dy, T* out, int64_t numel, int64_t dim_stride,
                             int64_t dim_size, int act, int order, double alpha, double gain, double clamp) {
  BiasActParams p = {};
  p.x = x;
  p.b = b;
  p.dy = dy;
  p.out = out;
  p.numel = numel;
  p.dim_stride = dim_stride;
  p.dim_size = dim_size;
  p.act = act;
  p.order = order;
  p.alpha = alpha;
  p.gain = gain;
  p.clamp = clamp;
  for (int64_t i = 0; i < numel; ++i) bias_act_element<T, T>(p, i);
}

extern "C" {

// ints: batch, channels, in_h, in_w, out_h, out_w, up_x, up_y, down_x, down_y,
// pad_x0, pad_y0, f_h, f_w, f_separable, flip_filter. strides: x then y, in elements. plan receives
// tile_w, tile_h, planes_per_block, threads, shared_bytes. Returns the
// number of out-of-tile reads (0 when correct), or -1 when planning fails.
int sg_emulate_upfirdn2d_f64(const double* x, const double* f, double* y, const int64_t* ints, const int64_t* strides,
                             double gain, int64_t max_grid_y, int64_t* plan) {
  return emulate_upfirdn2d<double, double>(x, f, y, ints, strides, gain, max_grid_y, plan);
}

int sg_emulate_upfirdn2d_f32(const float* x, const float* f, float* y, const int64_t* ints, const int64_t* strides,
                             double gain, int64_t max_grid_y, int64_t* plan) {
  return emulate_upfirdn2d<float, float>(x, f, y, ints, strides, gain, max_grid_y, plan);
}

// The size check ops.cpp makes before a launch; ints as in sg_emulate_upfirdn2d (f_separable, flip_filter unused).
int sg_upfirdn2d_sizes_fit(const int64_t* ints) {
  return upfirdn2d_sizes_fit(ints[0], ints[1], ints[2], ints[3], ints[4], ints[5], ints[6], ints[7], ints[8], ints[9],
                             ints[10], ints[11], ints[12], ints[13]);
}

void sg_emulate_bias_act_f64(const double* x, const double* b, const double* dy, double* out, int64_t numel,
                             int64_t dim_stride, int64_t dim_size, int act, int order, double alpha, double gain,
                             double clamp) {
  emulate_bias_act<double>(x, b, dy, out, numel, dim_stride, dim_size, act, order, alpha, gain, clamp);
}

void sg_emulate_bias_act_f32(const float* x, const float* b, const float* dy, float* out, int64_t numel,
                             int64_t dim_stride, int64_t dim_size, int act, int order, double alpha, double gain,
                             double clamp) {
  emulate_bias_act<float>(x, b, dy, out, numel, dim_stride, dim_size, act, order, alpha, gain, clamp);
}

}  // extern "C"
