// Shared helpers for the smallgan CUDA kernels.
//
// The kernel logic in upfirdn2d.h and bias_act.h is plain C++ templated on
// the element type, so the same code compiles with nvcc for the GPU and with
// a host compiler for the CPU emulation that tests/test_ops_cuda_build.py
// runs on machines without a GPU. Only this file knows about CUDA types.
#pragma once

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define SG_HD __host__ __device__ __forceinline__
#else
#define SG_HD inline
#endif

// Index checks for the CPU emulation; compiled out everywhere else.
#ifndef SG_ASSERT
#define SG_ASSERT(cond)
#endif

namespace smallgan {

// Element types the launchers accept; matches the switch in ops.cpp.
enum DType : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

// Loads widen to the accumulation type (float, or double for double data);
// stores round back to the element type.
SG_HD float load(const float* p) { return *p; }
SG_HD double load(const double* p) { return *p; }
SG_HD void store(float* p, float v) { *p = v; }
SG_HD void store(double* p, double v) { *p = v; }
#ifdef __CUDACC__
SG_HD float load(const __half* p) { return __half2float(*p); }
SG_HD float load(const __nv_bfloat16* p) { return __bfloat162float(*p); }
SG_HD void store(__half* p, float v) { *p = __float2half_rn(v); }
SG_HD void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }
#endif

// Math in the accumulation type.
SG_HD float sg_exp(float v) { return expf(v); }
SG_HD double sg_exp(double v) { return exp(v); }
SG_HD float sg_expm1(float v) { return expm1f(v); }
SG_HD double sg_expm1(double v) { return expm1(v); }
SG_HD float sg_log1p(float v) { return log1pf(v); }
SG_HD double sg_log1p(double v) { return log1p(v); }
SG_HD float sg_tanh(float v) { return tanhf(v); }
SG_HD double sg_tanh(double v) { return tanh(v); }
SG_HD float sg_abs(float v) { return fabsf(v); }
SG_HD double sg_abs(double v) { return fabs(v); }

// Integer division rounding towards -infinity / +infinity, for b > 0.
SG_HD int floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
SG_HD int ceil_div(int a, int b) { return -floor_div(-a, b); }
// a mod b in [0, b), for b > 0.
SG_HD int pos_mod(int a, int b) { return a - floor_div(a, b) * b; }

}  // namespace smallgan
