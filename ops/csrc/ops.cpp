// Python bindings of the smallgan CUDA kernels: argument checks, launch
// planning and dispatch on the element type. Shapes, output allocation and
// autograd are handled in ops/_custom.py.
#include <torch/extension.h>

#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include <optional>

#include "launch.h"

namespace smallgan {
namespace {

int dtype_code(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return kFloat32;
    case at::kDouble: return kFloat64;
    case at::kHalf: return kFloat16;
    case at::kBFloat16: return kBFloat16;
    default: TORCH_CHECK(false, "smallgan ops: unsupported dtype ", t.scalar_type());
  }
  return -1;
}

void check_launch(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, "smallgan ops: ", what, " launch failed: ", cudaGetErrorString(err));
}

// Fills y (allocated by the caller with the output shape) with upfirdn2d(x).
// f: 2-D [f_h, f_w] or 1-D separable, as given to upfirdn2d, contiguous
// float32 (float64 for float64 x). Only pad_x0/pad_y0 are needed: the output
// size fixes the rest.
void upfirdn2d(const at::Tensor& x, const at::Tensor& f, const at::Tensor& y, int64_t up_x, int64_t up_y, int64_t down_x,
               int64_t down_y, int64_t pad_x0, int64_t pad_y0, bool flip_filter, double gain) {
  TORCH_CHECK(x.is_cuda() && f.is_cuda() && y.is_cuda(), "upfirdn2d: tensors must be on a CUDA device");
  TORCH_CHECK(f.device() == x.device() && y.device() == x.device(), "upfirdn2d: f is on ", f.device(), " and y on ",
              y.device(), ", but x is on ", x.device(), "; put every tensor on one device");
  TORCH_CHECK(x.dim() == 4 && y.dim() == 4 && (f.dim() == 1 || f.dim() == 2), "upfirdn2d: expected 4-D x and y, 1-D or 2-D f");
  TORCH_CHECK(x.scalar_type() == y.scalar_type(), "upfirdn2d: x and y dtypes differ");
  TORCH_CHECK(f.scalar_type() == (x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat) && f.is_contiguous(),
              "upfirdn2d: f must be contiguous float32 (float64 for float64 input)");
  TORCH_CHECK(up_x >= 1 && up_y >= 1 && down_x >= 1 && down_y >= 1, "upfirdn2d: bad up/down");
  TORCH_CHECK(y.size(0) == x.size(0) && y.size(1) == x.size(1), "upfirdn2d: y has the wrong batch or channels");
  TORCH_CHECK(upfirdn2d_sizes_fit(x.size(0), x.size(1), x.size(2), x.size(3), y.size(2), y.size(3), up_x, up_y, down_x,
                                  down_y, pad_x0, pad_y0, f.size(0), f.size(f.dim() - 1)),
              "upfirdn2d: input ", x.sizes(), " is too large for the kernel's 32-bit image coordinates (at most 2^31 "
              "pixels per image and 2^31 images x channels); split the batch or use impl='ref'");
  if (y.numel() == 0) return;

  Upfirdn2dParams p = {};
  p.x = x.data_ptr();
  p.f = f.data_ptr();
  p.y = y.data_ptr();
  for (int d = 0; d < 4; ++d) {
    p.x_stride[d] = x.stride(d);
    p.y_stride[d] = y.stride(d);
  }
  p.batch = (int)x.size(0);
  p.channels = (int)x.size(1);
  p.in_h = (int)x.size(2);
  p.in_w = (int)x.size(3);
  p.out_h = (int)y.size(2);
  p.out_w = (int)y.size(3);
  p.up_x = (int)up_x;
  p.up_y = (int)up_y;
  p.down_x = (int)down_x;
  p.down_y = (int)down_y;
  p.pad_x0 = (int)pad_x0;
  p.pad_y0 = (int)pad_y0;
  p.f_separable = f.dim() == 1;
  p.f_h = (int)f.size(0);
  p.f_w = (int)f.size(f.dim() - 1);
  p.flip_filter = flip_filter;
  p.gain = gain;
  const int64_t max_shared = 48 * 1024;  // available without opting in on every GPU
  TORCH_CHECK(upfirdn2d_plan(p, (int)f.element_size(), max_shared), "upfirdn2d: filter too large for the kernel");

  const c10::cuda::CUDAGuard guard(x.device());
  check_launch(launch_upfirdn2d(p, dtype_code(x), c10::cuda::getCurrentCUDAStream().stream()), "upfirdn2d");
}

// out = bias_act(x) (order 0) or dy times its first/second derivative (order
// 1/2). x, dy and out share one dense layout; b has x's dtype.
void bias_act(const at::Tensor& x, const std::optional<at::Tensor>& b, const std::optional<at::Tensor>& dy,
              const at::Tensor& out, int64_t dim, int64_t act, int64_t order, double alpha, double gain, double clamp) {
  TORCH_CHECK(x.is_cuda() && out.is_cuda(), "bias_act: tensors must be on a CUDA device");
  TORCH_CHECK(out.device() == x.device() && (!b.has_value() || !b->defined() || b->device() == x.device()) &&
                  (!dy.has_value() || !dy->defined() || dy->device() == x.device()),
              "bias_act: every tensor must be on x's device (", x.device(), ")");
  TORCH_CHECK(x.is_non_overlapping_and_dense(), "bias_act: x must be dense");
  TORCH_CHECK(out.strides() == x.strides() && out.sizes() == x.sizes() && out.scalar_type() == x.scalar_type(),
              "bias_act: out must match x");
  TORCH_CHECK(order >= 0 && order <= 2, "bias_act: order must be 0, 1 or 2");
  TORCH_CHECK(dim >= 0 && dim < std::max<int64_t>(x.dim(), 1), "bias_act: bad dim");

  BiasActParams p = {};
  p.x = x.data_ptr();
  p.out = out.data_ptr();
  p.numel = x.numel();
  p.dim_stride = x.dim() ? x.stride(dim) : 1;
  p.dim_size = x.dim() ? x.size(dim) : 1;
  if (b.has_value() && b->defined()) {
    TORCH_CHECK(b->is_cuda() && b->dim() == 1 && b->size(0) == p.dim_size && b->scalar_type() == x.scalar_type() &&
                    b->is_contiguous(),
                "bias_act: b must be a contiguous [x.shape[dim]] tensor of x's dtype");
    p.b = b->data_ptr();
  }
  if (order > 0) {
    TORCH_CHECK(dy.has_value() && dy->defined(), "bias_act: gradient orders need dy");
    TORCH_CHECK(dy->strides() == x.strides() && dy->sizes() == x.sizes() && dy->scalar_type() == x.scalar_type(),
                "bias_act: dy must match x");
    p.dy = dy->data_ptr();
  }
  p.act = (int)act;
  p.order = (int)order;
  p.alpha = alpha;
  p.gain = gain;
  p.clamp = clamp;
  if (p.numel == 0) return;

  const c10::cuda::CUDAGuard guard(x.device());
  check_launch(launch_bias_act(p, dtype_code(x), c10::cuda::getCurrentCUDAStream().stream()), "bias_act");
}

}  // namespace
}  // namespace smallgan

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("upfirdn2d", &smallgan::upfirdn2d, "upfirdn2d into a preallocated output (CUDA)");
  m.def("bias_act", &smallgan::bias_act, "bias_act and its derivatives into a preallocated output (CUDA)");
}
