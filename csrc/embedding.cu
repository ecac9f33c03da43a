// Token embedding gather: one block per token, bf16 table row -> f32 residual row.
#include "vpd_common.cuh"
#include "vpd_params.h"

extern "C" __global__ void embedding_kernel(EmbeddingParams p) {
    const uint32_t t = blockIdx.x;
    if (t >= p.tokens) return;
    const uint16_t *row = p.table + static_cast<size_t>(p.ids[t]) * p.hidden;
    float *out = p.out + static_cast<size_t>(t) * p.hidden;
    for (uint32_t i = threadIdx.x; i < p.hidden; i += blockDim.x) out[i] = bf16_to_f32(row[i]);
}
