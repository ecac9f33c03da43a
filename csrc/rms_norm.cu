// Fused residual add + RMSNorm, one block per row (Zhang & Sennrich 2019, "Root Mean Square
// Layer Normalization"). f32 residual stream, bf16 weight and output (the next GEMM's input),
// f32 accumulation; matches backend::cpu::ops::rms_norm. An optional row index list gathers
// the rows that want logits before the LM head, so the final norm runs only on those.
#include "vpd_common.cuh"
#include "vpd_params.h"

// float4s a thread keeps in registers on the vector path: rows up to 16 · blockDim floats.
#define RMS_VEC 4

// The vector path: 16-byte loads, and the row kept in registers between the sum of squares and
// the output, so the residual is read once (the scalar path reads it twice). At a loaded
// verify's 128 rows (one block a row, one block an SM) the scalar path took 9 µs a call on an
// H100, about a third of its bytes' time (docs/perf.md, "Where a loaded forward's time goes").
static __device__ __forceinline__ void rms_norm_vec(const RmsNormParams &p, float *res, const float *x, uint16_t *out) {
    const uint32_t n4 = p.dim / 4;
    float4 v[RMS_VEC];
    float ss = 0.f;
#pragma unroll
    for (int k = 0; k < RMS_VEC; ++k) {
        const uint32_t i = threadIdx.x + k * blockDim.x;
        if (i < n4) {
            float4 r = reinterpret_cast<const float4 *>(res)[i];
            if (x) {
                const float4 a = reinterpret_cast<const float4 *>(x)[i];
                r.x += a.x;
                r.y += a.y;
                r.z += a.z;
                r.w += a.w;
                reinterpret_cast<float4 *>(res)[i] = r;
            }
            v[k] = r;
            ss += r.x * r.x + r.y * r.y + r.z * r.z + r.w * r.w;
        }
    }
    const float inv = rsqrtf(block_sum(ss) / p.dim + p.eps);
#pragma unroll
    for (int k = 0; k < RMS_VEC; ++k) {
        const uint32_t i = threadIdx.x + k * blockDim.x;
        if (i < n4) {
            const uint2 w = reinterpret_cast<const uint2 *>(p.weight)[i];
            const float4 r = v[k];
            uint2 o;
            o.x = bf16x2_pack(bf16_lo(w.x) * (r.x * inv), bf16_hi(w.x) * (r.y * inv));
            o.y = bf16x2_pack(bf16_lo(w.y) * (r.z * inv), bf16_hi(w.y) * (r.w * inv));
            reinterpret_cast<uint2 *>(out)[i] = o;
        }
    }
}

extern "C" __global__ void rms_norm_kernel(RmsNormParams p) {
    const uint32_t row = blockIdx.x;
    if (row >= p.rows) return;
    const uint32_t src = p.rows_idx ? p.rows_idx[row] : row;
    float *res = p.residual + static_cast<size_t>(src) * p.dim;
    const float *x = p.x ? p.x + static_cast<size_t>(row) * p.dim : nullptr;
    uint16_t *out_row = p.out + static_cast<size_t>(row) * p.dim;
    // Uniform across the block (same dim and base addresses for every row), so the branch and
    // the block_sum inside it are taken by all threads or none.
    if (p.dim % 4 == 0 && p.dim <= 4u * RMS_VEC * blockDim.x && is_aligned(p.residual, 16) && (!p.x || is_aligned(p.x, 16)) &&
        is_aligned(p.weight, 8) && is_aligned(p.out, 8)) {
        rms_norm_vec(p, res, x, out_row);
        return;
    }
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
#pragma unroll 4
    for (uint32_t i = threadIdx.x; i < p.dim; i += blockDim.x) {
        out_row[i] = f32_to_bf16(bf16_to_f32(p.weight[i]) * (res[i] * inv));
    }
}
