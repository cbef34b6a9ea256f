// bias_act kernel logic: activation functions, their first and second
// derivatives, and the per-element work.
//
// order 0: out = clamp(gain * act(x + b))
// order 1: out = dy * gain * act'(x + b)   where the clamp passed the value, else 0
// order 2: out = dy * gain * act''(x + b)  likewise
// Orders 1 and 2 are what the backward and double-backward formulas in
// ops/_custom.py need. Derivatives at kinks follow PyTorch's conventions
// (relu' (0) = 0, lrelu'(0) = alpha, elu'(0) = alpha; the clamp passes
// values with |v| <= clamp), so both implementations agree everywhere.
#pragma once

#include "common.h"

namespace smallgan {

// Codes match ops/bias_act.py `activation_funcs`.
enum Act : int {
  kLinear = 0, kRelu = 1, kLrelu = 2, kTanh = 3, kSigmoid = 4,
  kElu = 5, kSelu = 6, kSoftplus = 7, kSwish = 8
};

struct BiasActParams {
  const void* x;   // pre-activation input, dense
  const void* b;   // bias [dim_size] or nullptr, same element type as x
  const void* dy;  // incoming gradient (orders 1, 2), same strides as x
  void* out;       // same strides as x
  int64_t numel;
  int64_t dim_stride;  // memory stride of the bias dimension
  int64_t dim_size;
  int act, order;
  double alpha, gain, clamp;  // clamp < 0: no clamp
};

// SELU constants (Klambauer et al. 2017), as torch.nn.functional.selu.
#define SG_SELU_SCALE 1.0507009873554804934193349852946
#define SG_SELU_ALPHA 1.6732632423543772848170429916717
// Above this softplus(z) is z in PyTorch (threshold=20).
#define SG_SOFTPLUS_THRESHOLD 20

template <typename A>
SG_HD A sg_sigmoid(A z) {
  return A(1) / (A(1) + sg_exp(-z));
}

template <typename A>
SG_HD A act_value(int act, A z, A alpha) {
  switch (act) {
    case kRelu: return z > A(0) ? z : A(0);
    case kLrelu: return z > A(0) ? z : z * alpha;
    case kTanh: return sg_tanh(z);
    case kSigmoid: return sg_sigmoid(z);
    case kElu: return z > A(0) ? z : alpha * sg_expm1(z);
    case kSelu: return A(SG_SELU_SCALE) * (z > A(0) ? z : A(SG_SELU_ALPHA) * sg_expm1(z));
    case kSoftplus: return z > A(SG_SOFTPLUS_THRESHOLD) ? z : sg_log1p(sg_exp(z));
    case kSwish: return z * sg_sigmoid(z);
    default: return z;
  }
}

template <typename A>
SG_HD A act_grad1(int act, A z, A alpha) {
  switch (act) {
    case kRelu: return z > A(0) ? A(1) : A(0);
    case kLrelu: return z > A(0) ? A(1) : alpha;
    case kTanh: { A t = sg_tanh(z); return A(1) - t * t; }
    case kSigmoid: { A s = sg_sigmoid(z); return s * (A(1) - s); }
    case kElu: return z > A(0) ? A(1) : alpha * sg_exp(z);
    case kSelu: return z > A(0) ? A(SG_SELU_SCALE) : A(SG_SELU_SCALE * SG_SELU_ALPHA) * sg_exp(z);
    case kSoftplus: return z > A(SG_SOFTPLUS_THRESHOLD) ? A(1) : sg_sigmoid(z);
    case kSwish: { A s = sg_sigmoid(z); return s * (A(1) + z * (A(1) - s)); }
    default: return A(1);
  }
}

template <typename A>
SG_HD A act_grad2(int act, A z, A alpha) {
  switch (act) {
    case kTanh: { A t = sg_tanh(z); return A(-2) * t * (A(1) - t * t); }
    case kSigmoid: { A s = sg_sigmoid(z); return s * (A(1) - s) * (A(1) - A(2) * s); }
    case kElu: return z > A(0) ? A(0) : alpha * sg_exp(z);
    case kSelu: return z > A(0) ? A(0) : A(SG_SELU_SCALE * SG_SELU_ALPHA) * sg_exp(z);
    case kSoftplus: { if (z > A(SG_SOFTPLUS_THRESHOLD)) return A(0); A s = sg_sigmoid(z); return s * (A(1) - s); }
    case kSwish: { A s = sg_sigmoid(z); return s * (A(1) - s) * (A(2) + z * (A(1) - A(2) * s)); }
    default: return A(0);  // linear, relu, lrelu
  }
}

template <typename T, typename A>
SG_HD void bias_act_element(const BiasActParams& p, int64_t i) {
  A z = load(static_cast<const T*>(p.x) + i);
  if (p.b) z += load(static_cast<const T*>(p.b) + (i / p.dim_stride) % p.dim_size);
  const A alpha = (A)p.alpha;
  const A gain = (A)p.gain;
  const A clamp = (A)p.clamp;
  T* out = static_cast<T*>(p.out) + i;
  if (p.order == 0) {
    A v = act_value(p.act, z, alpha) * gain;
    if (clamp >= A(0)) v = v > clamp ? clamp : (v < -clamp ? -clamp : v);
    store(out, v);
    return;
  }
  A s = (p.order == 1 ? act_grad1(p.act, z, alpha) : act_grad2(p.act, z, alpha)) * gain;
  // The clamp is flat where it cut the value off (and blocks NaNs, as torch.clamp's backward).
  if (clamp >= A(0) && !(sg_abs(act_value(p.act, z, alpha) * gain) <= clamp)) s = A(0);
  store(out, load(static_cast<const T*>(p.dy) + i) * s);
}

}  // namespace smallgan
