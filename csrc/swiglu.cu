// SwiGLU (Shazeer 2020, "GLU Variants Improve Transformer"): silu(gate) * up over the fused
// gate|up GEMM output, written as bf16 for the down projection. Matches cpu::ops::silu_mul.
#include "vpd_common.cuh"
#include "vpd_params.h"

static __device__ __forceinline__ float silu_mul(float g, float u) { return g / (1.f + expf(-g)) * u; }

extern "C" __global__ void swiglu_kernel(SwigluParams p) {
    const size_t n = static_cast<size_t>(p.tokens) * p.ff;
    // Vector path: four outputs a thread from 16-byte loads, with 32-bit index arithmetic (the
    // scalar path's 64-bit division and modulo a element cost about as much as its bytes).
    if (p.ff % 4 == 0 && n / 4 < 0xffffffffu && is_aligned(p.gate_up, 16) && is_aligned(p.out, 8)) {
        const uint32_t n4 = static_cast<uint32_t>(n / 4), ff4 = p.ff / 4;
        for (uint32_t j = blockIdx.x * blockDim.x + threadIdx.x; j < n4; j += gridDim.x * blockDim.x) {
            const uint32_t t = j / ff4, i = j % ff4;
            const float4 *row = reinterpret_cast<const float4 *>(p.gate_up + static_cast<size_t>(t) * 2 * p.ff);
            const float4 g = row[i], u = row[ff4 + i];
            uint2 o;
            o.x = bf16x2_pack(silu_mul(g.x, u.x), silu_mul(g.y, u.y));
            o.y = bf16x2_pack(silu_mul(g.z, u.z), silu_mul(g.w, u.w));
            reinterpret_cast<uint2 *>(p.out)[j] = o;
        }
        return;
    }
    for (size_t idx = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; idx < n;
         idx += static_cast<size_t>(gridDim.x) * blockDim.x) {
        const size_t t = idx / p.ff, i = idx % p.ff;
        const float g = p.gate_up[t * 2 * p.ff + i];
        const float u = p.gate_up[t * 2 * p.ff + p.ff + i];
        p.out[idx] = f32_to_bf16(silu_mul(g, u));
    }
}
