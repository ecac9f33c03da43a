// Rotate-half rotary position embedding (Su et al. 2021, RoFormer; Hugging Face's layout)
// on q and k, fused with the paged K/V cache write (PagedAttention, Kwon et al. 2023).
// One block per token; thread i rotates pair (i, i + D/2) of one head. The angle is computed
// in f32 as position * inv_freq, as transformers and cpu::ops::rope_rotate_half do; llama3
// scaling is already folded into inv_freq on the host.
#include "vpd_common.cuh"
#include "vpd_params.h"

// Angles tabled per block: heads up to 256 wide.
#define ROPE_TAB 128

extern "C" __global__ void rope_kv_kernel(RopeKvParams p) {
    const uint32_t t = blockIdx.x;
    if (t >= p.tokens) return;
    const uint32_t half = p.head_dim / 2;
    const uint32_t kvd = p.n_kv_heads * p.head_dim;
    const uint32_t q_cols = p.n_heads * p.head_dim;
    float *row = p.qkv + static_cast<size_t>(t) * p.qkv_stride;
    const float pos = static_cast<float>(p.positions[t]);
    const size_t slot = p.slots[t];
    // The D/2 angles are the same for every head: computed once a token into shared memory
    // (the same sincosf of the same f32 product, so the same bits) instead of once a pair, 40
    // times over at the 8B shape. Heads wider than 2 · ROPE_TAB fall back to once a pair.
    __shared__ float sn_tab[ROPE_TAB], cs_tab[ROPE_TAB];
    const bool tab = half <= ROPE_TAB;
    if (tab) {
        for (uint32_t i = threadIdx.x; i < half; i += blockDim.x) sincosf(pos * p.inv_freq[i], &sn_tab[i], &cs_tab[i]);
        __syncthreads();
    }
    // Pairs of q heads, then of k heads.
    const uint32_t pairs = (p.n_heads + p.n_kv_heads) * half;
    for (uint32_t w = threadIdx.x; w < pairs; w += blockDim.x) {
        const uint32_t head = w / half, i = w % half;
        float sn, cs;
        if (tab) {
            sn = sn_tab[i];
            cs = cs_tab[i];
        } else {
            sincosf(pos * p.inv_freq[i], &sn, &cs);
        }
        float *h = head < p.n_heads ? row + head * p.head_dim : row + q_cols + (head - p.n_heads) * p.head_dim;
        const float x1 = h[i], x2 = h[i + half];
        const float a = x1 * cs - x2 * sn, b = x2 * cs + x1 * sn;
        h[i] = a;
        h[i + half] = b;
        if (head >= p.n_heads) {
            uint16_t *kc = p.k_cache + slot * kvd + (head - p.n_heads) * p.head_dim;
            kc[i] = f32_to_bf16(a);
            kc[i + half] = f32_to_bf16(b);
        }
    }
    const float *v = row + q_cols + kvd;
    uint16_t *vc = p.v_cache + slot * kvd;
    for (uint32_t i = threadIdx.x; i < kvd; i += blockDim.x) vc[i] = f32_to_bf16(v[i]);
}
