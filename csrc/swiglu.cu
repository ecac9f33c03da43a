// SwiGLU (Shazeer 2020, "GLU Variants Improve Transformer"): silu(gate) * up over the fused
// gate|up GEMM output, written as bf16 for the down projection. Matches cpu::ops::silu_mul.
#include "vpd_common.cuh"
#include "vpd_params.h"

extern "C" __global__ void swiglu_kernel(SwigluParams p) {
    const size_t n = static_cast<size_t>(p.tokens) * p.ff;
    for (size_t idx = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; idx < n;
         idx += static_cast<size_t>(gridDim.x) * blockDim.x) {
        const size_t t = idx / p.ff, i = idx % p.ff;
        const float g = p.gate_up[t * 2 * p.ff + i];
        const float u = p.gate_up[t * 2 * p.ff + p.ff + i];
        p.out[idx] = f32_to_bf16(g / (1.f + expf(-g)) * u);
    }
}
