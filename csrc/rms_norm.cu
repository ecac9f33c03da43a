// Fused residual add + RMSNorm, one block per row (Zhang & Sennrich 2019, "Root Mean Square
// Layer Normalization"). f32 residual stream, bf16 weight and output (the next GEMM's input),
// f32 accumulation; matches backend::cpu::ops::rms_norm. An optional row index list gathers
// the rows that want logits before the LM head, so the final norm runs only on those.
#include "vpd_common.cuh"
#include "vpd_params.h"

extern "C" __global__ void rms_norm_kernel(RmsNormParams p) {
    const uint32_t row = blockIdx.x;
    if (row >= p.rows) return;
    const uint32_t src = p.rows_idx ? p.rows_idx[row] : row;
    float *res = p.residual + static_cast<size_t>(src) * p.dim;
    const float *x = p.x ? p.x + static_cast<size_t>(row) * p.dim : nullptr;
    float ss = 0.f;
    // Unrolled so that several loads are in flight: with one row per block (a decode step's
    // final norm) the loop is a chain of memory latencies otherwise.
#pragma unroll 4
    for (uint32_t i = threadIdx.x; i < p.dim; i += blockDim.x) {
        float v = res[i];
        if (x) {
            v += x[i];
            res[i] = v;
        }
        ss += v * v;
    }
    const float inv = rsqrtf(block_sum(ss) / p.dim + p.eps);
    uint16_t *out = p.out + static_cast<size_t>(row) * p.dim;
#pragma unroll 4
    for (uint32_t i = threadIdx.x; i < p.dim; i += blockDim.x) {
        out[i] = f32_to_bf16(bf16_to_f32(p.weight[i]) * (res[i] * inv));
    }
}
