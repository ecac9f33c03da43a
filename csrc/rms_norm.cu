// Fused residual add + RMSNorm, one block per row (Zhang & Sennrich 2019, "Root Mean Square
// Layer Normalization"). bf16 storage, f32 accumulation; matches backend::cpu::ops::rms_norm.
#include <cuda_bf16.h>

#include "vpd_params.h"

static __device__ __forceinline__ float bf16_to_f32(uint16_t v) {
    return __uint_as_float(static_cast<uint32_t>(v) << 16);
}

static __device__ __forceinline__ uint16_t f32_to_bf16(float f) {
    __nv_bfloat16 b = __float2bfloat16_rn(f);
    return *reinterpret_cast<uint16_t *>(&b);
}

extern "C" __global__ void rms_norm_kernel(RmsNormParams p) {
    const uint32_t row = blockIdx.x;
    if (row >= p.rows) return;
    uint16_t *res = p.residual + static_cast<size_t>(row) * p.dim;
    const uint16_t *x = p.x ? p.x + static_cast<size_t>(row) * p.dim : nullptr;
    float ss = 0.f;
    for (uint32_t i = threadIdx.x; i < p.dim; i += blockDim.x) {
        float v = bf16_to_f32(res[i]);
        if (x) {
            v += bf16_to_f32(x[i]);
            res[i] = f32_to_bf16(v);
            v = bf16_to_f32(res[i]);  // normalise what is stored, as the reference does
        }
        ss += v * v;
    }
    __shared__ float warp_sums[32];
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = ss;
    __syncthreads();
    if (threadIdx.x < 32) {
        float v = threadIdx.x < (blockDim.x + 31) / 32 ? warp_sums[threadIdx.x] : 0.f;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (threadIdx.x == 0) warp_sums[0] = v;
    }
    __syncthreads();
    const float inv = rsqrtf(warp_sums[0] / p.dim + p.eps);
    uint16_t *out = p.out + static_cast<size_t>(row) * p.dim;
    for (uint32_t i = threadIdx.x; i < p.dim; i += blockDim.x) {
        out[i] = f32_to_bf16(bf16_to_f32(res[i]) * inv * bf16_to_f32(p.weight[i]));
    }
}
