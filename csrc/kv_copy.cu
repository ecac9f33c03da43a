// In-order K/V slot copies: copy-on-write of forked blocks and compaction of an accepted
// tree path. One block per (layer, K|V) plane; the pairs run in the caller's order inside the
// block (a barrier between pairs), so a later pair may read what an earlier one wrote.
#include "vpd_common.cuh"
#include "vpd_params.h"

extern "C" __global__ void kv_copy_kernel(KvCopyParams p) {
    uint16_t *plane = p.cache + blockIdx.x * p.plane;
    for (uint32_t k = 0; k < p.pairs; ++k) {
        const uint16_t *src = plane + static_cast<size_t>(p.src[k]) * p.kv_dim;
        uint16_t *dst = plane + static_cast<size_t>(p.dst[k]) * p.kv_dim;
        // Slots never partly overlap, and each thread reads an element before writing it.
        for (uint32_t i = threadIdx.x; i < p.kv_dim; i += blockDim.x) dst[i] = src[i];
        __syncthreads();
    }
}
