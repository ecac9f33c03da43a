// Paged attention for every kind of step in one kernel family: decode (1 token), chain
// verification (L+1), chunked prefill and token trees (ancestor-only mask, SpecInfer, Miao et
// al. 2024). Scaled dot-product attention (Vaswani et al. 2017) with grouped query heads (GQA,
// Ainslie et al. 2023), K/V read as bf16 through per-sequence block tables (PagedAttention,
// Kwon et al. 2023), the softmax computed online in one pass (Milakov & Gimelshein 2018, as
// FlashAttention does), and split-K over the visible positions for long contexts with few
// queries (flash-decoding, Dao et al. 2023): each split writes (acc, max, sum) and
// attn_combine_kernel merges them. Matches backend::cpu::attention::paged_attention.
//
// One block of ATTN_WARPS warps per (token, query head, split). Each warp takes every
// ATTN_WARPS-th visible position; lane l holds head elements l, l + 32, ... (D <= 256).
#include "vpd_common.cuh"
#include "vpd_params.h"

#define ATTN_WARPS 4
#define ATTN_MAX_PER_LANE 8

extern "C" __global__ void __launch_bounds__(ATTN_WARPS * 32) paged_attn_kernel(PagedAttnParams p) {
    const uint32_t t = blockIdx.x, h = blockIdx.y, split = blockIdx.z;
    const uint32_t lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const uint32_t D = p.head_dim, kvd = p.n_kv_heads * D;
    const uint32_t s = p.tok_seq[t];
    const uint32_t tok0 = p.seq_tok_start[s];
    const uint32_t i = t - tok0;
    const uint32_t start = p.seq_start_pos[s];
    const bool tree = p.seq_is_tree[s] != 0;

    extern __shared__ float smem[];
    float *red = smem;                                                 // [ATTN_WARPS][D + 2]
    int32_t *anc = reinterpret_cast<int32_t *>(smem + ATTN_WARPS * (D + 2));  // [max_tree]
    __shared__ uint32_t n_anc;
    uint32_t n_new = i + 1;
    if (tree) {
        // The ancestor chain of token i (itself first): at most i + 1 <= max_tree entries.
        if (threadIdx.x == 0) {
            uint32_t n = 0;
            for (int32_t k = static_cast<int32_t>(i); k >= 0; k = p.parents[tok0 + k]) anc[n++] = k;
            n_anc = n;
        }
        __syncthreads();
        n_new = n_anc;
    }
    const uint32_t total = start + n_new;
    const uint32_t per = (total + p.num_splits - 1) / p.num_splits;
    const uint32_t lo = split * per, hi = min(total, lo + per);

    const uint32_t kvh = h / (p.n_heads / p.n_kv_heads);
    float qv[ATTN_MAX_PER_LANE], acc[ATTN_MAX_PER_LANE];
    const float *q = p.q + static_cast<size_t>(t) * p.q_stride + h * D;
#pragma unroll
    for (int c = 0; c < ATTN_MAX_PER_LANE; ++c) {
        const uint32_t d = lane + 32 * c;
        qv[c] = d < D ? q[d] * p.scale : 0.f;
        acc[c] = 0.f;
    }
    float m = -INFINITY, l = 0.f;
    const uint32_t *table = p.block_tables + static_cast<size_t>(s) * p.max_blocks;
    for (uint32_t k = lo + warp; k < hi; k += ATTN_WARPS) {
        const uint32_t pos = k < start ? k : start + (tree ? static_cast<uint32_t>(anc[k - start]) : k - start);
        const size_t slot = static_cast<size_t>(table[pos / p.block_size]) * p.block_size + pos % p.block_size;
        const uint16_t *kp = p.k_cache + slot * kvd + kvh * D;
        const uint16_t *vp = p.v_cache + slot * kvd + kvh * D;
        float dot = 0.f;
#pragma unroll
        for (int c = 0; c < ATTN_MAX_PER_LANE; ++c) {
            const uint32_t d = lane + 32 * c;
            if (d < D) dot += qv[c] * bf16_to_f32(kp[d]);
        }
        dot = warp_sum(dot);
        const float m_new = fmaxf(m, dot);
        const float corr = __expf(m - m_new);  // 0 on the first position (m = -inf)
        const float w = __expf(dot - m_new);
        l = l * corr + w;
#pragma unroll
        for (int c = 0; c < ATTN_MAX_PER_LANE; ++c) {
            const uint32_t d = lane + 32 * c;
            if (d < D) acc[c] = acc[c] * corr + w * bf16_to_f32(vp[d]);
        }
        m = m_new;
    }
    // Merge the warps' (max, sum, acc).
    float *mine = red + warp * (D + 2);
#pragma unroll
    for (int c = 0; c < ATTN_MAX_PER_LANE; ++c) {
        const uint32_t d = lane + 32 * c;
        if (d < D) mine[d] = acc[c];
    }
    if (lane == 0) {
        mine[D] = m;
        mine[D + 1] = l;
    }
    __syncthreads();
    float mx = -INFINITY;
    for (int w = 0; w < ATTN_WARPS; ++w) mx = fmaxf(mx, red[w * (D + 2) + D]);
    for (uint32_t d = threadIdx.x; d < D; d += blockDim.x) {
        float a = 0.f, sum = 0.f;
        for (int w = 0; w < ATTN_WARPS; ++w) {
            const float mw = red[w * (D + 2) + D];
            if (mw == -INFINITY) continue;  // a warp (or a whole split) that saw nothing
            const float f = __expf(mw - mx);
            a += f * red[w * (D + 2) + d];
            sum += f * red[w * (D + 2) + D + 1];
        }
        if (p.num_splits == 1) {
            p.out[static_cast<size_t>(t) * p.n_heads * D + h * D + d] = f32_to_bf16(a / sum);
        } else {
            float *part = p.partial + ((static_cast<size_t>(split) * p.tokens + t) * p.n_heads + h) * (D + 2);
            part[d] = a;
            if (d == 0) {
                part[D] = mx;
                part[D + 1] = sum;
            }
        }
    }
}

// Merges the num_splits partial results of paged_attn_kernel: one block per (token, head).
extern "C" __global__ void attn_combine_kernel(PagedAttnParams p) {
    const uint32_t t = blockIdx.x, h = blockIdx.y, D = p.head_dim;
    const size_t stride = static_cast<size_t>(p.tokens) * p.n_heads * (D + 2);
    const float *base = p.partial + (static_cast<size_t>(t) * p.n_heads + h) * (D + 2);
    float mx = -INFINITY;
    for (uint32_t s = 0; s < p.num_splits; ++s) mx = fmaxf(mx, base[s * stride + D]);
    for (uint32_t d = threadIdx.x; d < D; d += blockDim.x) {
        float a = 0.f, sum = 0.f;
        for (uint32_t s = 0; s < p.num_splits; ++s) {
            const float *part = base + s * stride;
            if (part[D] == -INFINITY) continue;
            const float f = __expf(part[D] - mx);
            a += f * part[d];
            sum += f * part[D + 1];
        }
        p.out[static_cast<size_t>(t) * p.n_heads * D + h * D + d] = f32_to_bf16(a / sum);
    }
}

// ---- GQA fast path (decode and short steps) ------------------------------------------------
// One block of GQA_WARPS warps per (token, KV head, split), computing all G = NH / NKV query
// heads of the group from one read of K/V (the generic kernel above reads it G times). A K or
// V row is split over D / 8 lanes, each loading 8 bf16 (16 bytes) at once; a warp so covers
// 32 / (D / 8) positions at a time and every lane keeps GQA_UNROLL positions' K and V loads in
// flight before it uses the first. Scores of one chunk share one rescale of the running
// (max, sum, acc) per head. The warps' and then the lane groups' states are merged at the end
// exactly as the generic kernel does; the output (or split partial) layout is the same, so
// attn_combine_kernel merges either. Needs D % 8 == 0 with D / 8 a power of two, G <= 8
// (checked on the host, which otherwise launches the generic kernel).
#define GQA_WARPS 4
#define GQA_UNROLL 4

template <int G, int DT>
static __device__ __forceinline__ void paged_attn_gqa(const PagedAttnParams &p) {
    const uint32_t t = blockIdx.x, kvh = blockIdx.y, split = blockIdx.z;
    const uint32_t D = DT ? DT : p.head_dim, kvd = p.n_kv_heads * D;
    const uint32_t lpp = D / 8;                        // lanes per position: 1, 2, 4, ..., 32
    const uint32_t lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const uint32_t sub = lane & (lpp - 1);             // this lane's 8 head elements
    const uint32_t groups = GQA_WARPS * 32 / lpp;      // positions the block covers at once
    const uint32_t pg = threadIdx.x / lpp;
    const uint32_t s = p.tok_seq[t];
    const uint32_t tok0 = p.seq_tok_start[s];
    const uint32_t i = t - tok0;
    const uint32_t start = p.seq_start_pos[s];
    const bool tree = p.seq_is_tree[s] != 0;

    extern __shared__ float gqa_smem[];
    float *red = gqa_smem;                                                    // [GQA_WARPS][G][D + 2]
    int32_t *anc = reinterpret_cast<int32_t *>(gqa_smem + GQA_WARPS * G * (D + 2));  // [max_tree]
    __shared__ uint32_t gqa_n_anc;
    uint32_t n_new = i + 1;
    if (tree) {
        if (threadIdx.x == 0) {
            uint32_t n = 0;
            for (int32_t k = static_cast<int32_t>(i); k >= 0; k = p.parents[tok0 + k]) anc[n++] = k;
            gqa_n_anc = n;
        }
        __syncthreads();
        n_new = gqa_n_anc;
    }
    const uint32_t total = start + n_new;
    const uint32_t per = (total + p.num_splits - 1) / p.num_splits;
    const uint32_t lo = split * per, hi = min(total, lo + per);

    float qv[G][8], acc[G][8], m[G], l[G];
#pragma unroll
    for (int g = 0; g < G; ++g) {
        const float *q = p.q + static_cast<size_t>(t) * p.q_stride + (kvh * G + g) * D + sub * 8;
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            qv[g][e] = q[e] * p.scale;
            acc[g][e] = 0.f;
        }
        m[g] = -INFINITY;
        l[g] = 0.f;
    }
    const uint32_t *table = p.block_tables + static_cast<size_t>(s) * p.max_blocks;
    const uint16_t *kb = p.k_cache + kvh * D + sub * 8;
    const uint16_t *vb = p.v_cache + kvh * D + sub * 8;
    for (uint32_t base = lo; base < hi; base += groups * GQA_UNROLL) {
        uint4 kr[GQA_UNROLL], vr[GQA_UNROLL];
        bool ok[GQA_UNROLL];
#pragma unroll
        for (int u = 0; u < GQA_UNROLL; ++u) {
            const uint32_t k = base + u * groups + pg;
            ok[u] = k < hi;
            kr[u] = make_uint4(0, 0, 0, 0);
            vr[u] = make_uint4(0, 0, 0, 0);
            if (ok[u]) {
                const uint32_t pos = k < start ? k : start + (tree ? static_cast<uint32_t>(anc[k - start]) : k - start);
                const size_t slot = static_cast<size_t>(table[pos / p.block_size]) * p.block_size + pos % p.block_size;
                kr[u] = __ldg(reinterpret_cast<const uint4 *>(kb + slot * kvd));
                vr[u] = __ldg(reinterpret_cast<const uint4 *>(vb + slot * kvd));
            }
        }
        float sc[GQA_UNROLL][G];
#pragma unroll
        for (int u = 0; u < GQA_UNROLL; ++u) {
            float kf[8];
            bf16x8_to_f32(kr[u], kf);
#pragma unroll
            for (int g = 0; g < G; ++g) {
                float d = 0.f;
#pragma unroll
                for (int e = 0; e < 8; ++e) d += qv[g][e] * kf[e];
#pragma unroll
                for (uint32_t o = lpp >> 1; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
                sc[u][g] = d;
            }
        }
#pragma unroll
        for (int g = 0; g < G; ++g) {
            float mc = m[g];
#pragma unroll
            for (int u = 0; u < GQA_UNROLL; ++u)
                if (ok[u]) mc = fmaxf(mc, sc[u][g]);
            if (mc == -INFINITY) continue;  // this lane group saw nothing yet
            const float corr = __expf(m[g] - mc);  // 0 while m = -inf
            l[g] *= corr;
#pragma unroll
            for (int e = 0; e < 8; ++e) acc[g][e] *= corr;
#pragma unroll
            for (int u = 0; u < GQA_UNROLL; ++u) {
                if (!ok[u]) continue;
                const float w = __expf(sc[u][g] - mc);
                float vf[8];
                bf16x8_to_f32(vr[u], vf);
                l[g] += w;
#pragma unroll
                for (int e = 0; e < 8; ++e) acc[g][e] += w * vf[e];
            }
            m[g] = mc;
        }
    }
    // Merge the lane groups of each warp (lanes sub, sub + lpp, ... hold the same elements).
#pragma unroll
    for (uint32_t o = lpp; o < 32; o <<= 1) {
#pragma unroll
        for (int g = 0; g < G; ++g) {
            const float om = __shfl_xor_sync(0xffffffffu, m[g], o);
            const float ol = __shfl_xor_sync(0xffffffffu, l[g], o);
            float oa[8];
#pragma unroll
            for (int e = 0; e < 8; ++e) oa[e] = __shfl_xor_sync(0xffffffffu, acc[g][e], o);
            const float mx = fmaxf(m[g], om);
            if (mx == -INFINITY) continue;
            const float fa = __expf(m[g] - mx), fb = __expf(om - mx);
            l[g] = l[g] * fa + ol * fb;
#pragma unroll
            for (int e = 0; e < 8; ++e) acc[g][e] = acc[g][e] * fa + oa[e] * fb;
            m[g] = mx;
        }
    }
    if (lane < lpp) {
#pragma unroll
        for (int g = 0; g < G; ++g) {
            float *mine = red + (warp * G + g) * (D + 2);
#pragma unroll
            for (int e = 0; e < 8; ++e) mine[sub * 8 + e] = acc[g][e];
            if (sub == 0) {
                mine[D] = m[g];
                mine[D + 1] = l[g];
            }
        }
    }
    __syncthreads();
    for (uint32_t idx = threadIdx.x; idx < G * D; idx += blockDim.x) {
        const uint32_t g = idx / D, d = idx % D, h = kvh * G + g;
        float mx = -INFINITY;
        for (int w = 0; w < GQA_WARPS; ++w) mx = fmaxf(mx, red[(w * G + g) * (D + 2) + D]);
        float a = 0.f, sum = 0.f;
        for (int w = 0; w < GQA_WARPS; ++w) {
            const float *r = red + (w * G + g) * (D + 2);
            if (r[D] == -INFINITY) continue;
            const float f = __expf(r[D] - mx);
            a += f * r[d];
            sum += f * r[D + 1];
        }
        if (p.num_splits == 1) {
            p.out[static_cast<size_t>(t) * p.n_heads * D + h * D + d] = f32_to_bf16(a / sum);
        } else {
            float *part = p.partial + ((static_cast<size_t>(split) * p.tokens + t) * p.n_heads + h) * (D + 2);
            part[d] = a;
            if (d == 0) {
                part[D] = mx;
                part[D + 1] = sum;
            }
        }
    }
}

// Head size known at compile time (DT = D: the index math folds and the shuffle loops unroll;
// Llama 3's 128 and SmolLM2's 64) or read from the parameters (DT = 0: any D the host allows).
#define GQA_KERNEL(G, DT, NAME)                                                                    \
    extern "C" __global__ void __launch_bounds__(GQA_WARPS * 32) NAME(PagedAttnParams p) {         \
        paged_attn_gqa<G, DT>(p);                                                                  \
    }
#define GQA_KERNELS(G)                                                                             \
    GQA_KERNEL(G, 0, paged_attn_gqa##G##_kernel)                                                   \
    GQA_KERNEL(G, 64, paged_attn_gqa##G##_d64_kernel)                                              \
    GQA_KERNEL(G, 128, paged_attn_gqa##G##_d128_kernel)
GQA_KERNELS(1)
GQA_KERNELS(2)
GQA_KERNELS(3)
GQA_KERNELS(4)
GQA_KERNELS(5)
GQA_KERNELS(6)
GQA_KERNELS(7)
GQA_KERNELS(8)
