// Paged attention on tensor cores for head sizes 64 and 128 and query groups up to 8: the path
// the backend takes for every step (decode, chain verification, chunked prefill, token trees)
// where the shape allows. Same maths, parameters and outputs as paged_attn_gqa in
// attention.cu (online softmax, Milakov & Gimelshein 2018; split-K with attn_combine_kernel,
// flash-decoding, Dao et al. 2023), with the two products on mma.sync and K/V staged through
// shared memory by cp.async, as FlashInfer's decode kernels do for grouped queries (Ye et al.
// 2025). Why: the CUDA-core GQA kernel spends ~16 shuffles and 4 exp per lane per 32 bytes it
// loads and so stalls on issue, not on memory (docs/perf.md, run L); here a 16-position tile
// costs 32 mma and 16 ldmatrix per warp, and the loads of the next tiles stay in flight.
//
// One warp per (token, KV head, split). The G query heads of the group are the rows of the
// m16n8k16 products (rows G..15 are zero):
//   S  = Q · Kᵀ  : A = Q (16 heads × 16 dims, registers), B = Kᵀ (ldmatrix of K rows), per
//                  8 positions;
//   O += P · V   : A = P, the score fragment itself rounded to bf16 (FlashAttention-2's
//                  register reuse), B = V (ldmatrix.trans of V rows), per 8 head elements.
// The softmax runs in base 2 (q pre-scaled by log2 e); the split partial stores its max in
// natural units, as attn_combine_kernel expects. K/V tiles of 16 positions go through a ring
// of MMA_STAGES shared buffers, their 16-byte chunks XOR-swizzled by row so that ldmatrix
// reads no bank twice. A split covers whole tiles. Positions past the split's end are loaded
// as zeros (cp.async zero-fill: no NaN from stale memory can reach P · V) and masked to -inf.
#include "vpd_common.cuh"
#include "vpd_params.h"

#define MMA_TILE 16
#define MMA_STAGES 3

static __device__ __forceinline__ uint32_t smem_u32(const void *p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, bypassing L1; `bytes` 0 writes zeros and reads nothing.
static __device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, uint32_t bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes));
}
static __device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
static __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

static __device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t r[4]) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
static __device__ __forceinline__ void ldsm_x4_trans(uint32_t addr, uint32_t r[4]) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

// c += A · B for one m16n8k16 tile whose A rows 8..15 are zero (a1 = a3 = 0).
static __device__ __forceinline__ void mma_rows8(float c[4], uint32_t a0, uint32_t a2, uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(0u), "r"(a2), "r"(0u), "r"(b0), "r"(b1));
}

// Two floats as bf16x2, `lo` in the low half (the even column of a fragment).
static __device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t *>(&v);
}

template <int G, int D>
static __device__ __forceinline__ void paged_attn_mma(const PagedAttnParams &p) {
    constexpr int CH = D / 8;          // 16-byte chunks of a K or V row
    constexpr int ROWS = 32 / CH;      // rows one pass of the warp's loads covers
    constexpr int KT = D / 16;         // k-steps of Q · Kᵀ
    constexpr int NT = D / 8;          // n-tiles of P · V
    __shared__ __align__(128) uint16_t ks[MMA_STAGES][MMA_TILE * D];
    __shared__ __align__(128) uint16_t vs[MMA_STAGES][MMA_TILE * D];
    extern __shared__ int32_t mma_anc[];  // [max_tree] ancestor chain of a tree token
    __shared__ uint32_t mma_n_anc;

    const uint32_t t = blockIdx.x, kvh = blockIdx.y, split = blockIdx.z;
    const uint32_t lane = threadIdx.x;
    const uint32_t kvd = p.n_kv_heads * D;
    const uint32_t s = p.tok_seq[t];
    const uint32_t tok0 = p.seq_tok_start[s];
    const uint32_t i = t - tok0;
    const uint32_t start = p.seq_start_pos[s];
    const bool tree = p.seq_is_tree[s] != 0;
    uint32_t n_new = i + 1;
    if (tree) {
        if (lane == 0) {
            uint32_t n = 0;
            for (int32_t k = static_cast<int32_t>(i); k >= 0; k = p.parents[tok0 + k]) mma_anc[n++] = k;
            mma_n_anc = n;
        }
        __syncwarp();
        n_new = mma_n_anc;
    }
    const uint32_t total = start + n_new;  // visible positions, in order k = 0 .. total - 1
    const uint32_t tiles = (total + MMA_TILE - 1) / MMA_TILE;
    const uint32_t per = (tiles + p.num_splits - 1) / p.num_splits;
    const uint32_t t_lo = min(tiles, split * per), t_hi = min(tiles, t_lo + per);
    const uint32_t hi = min(total, t_hi * MMA_TILE);

    // Q fragment: row r = lane / 4 is head kvh·G + r, columns c2, c2 + 1 (a0) and c2 + 8, + 9 (a2).
    const uint32_t r = lane >> 2, c2 = (lane & 3) * 2;
    uint32_t qa[KT][2];
    {
        const float qs = p.scale * 1.4426950408889634f;  // log2(e): exp2 below
        const float *q = p.q + static_cast<size_t>(t) * p.q_stride + (kvh * G + (r < G ? r : 0)) * D;
#pragma unroll
        for (int kt = 0; kt < KT; ++kt) {
            const int d = kt * 16 + c2;
            qa[kt][0] = r < G ? pack_bf16x2(q[d] * qs, q[d + 1] * qs) : 0u;
            qa[kt][1] = r < G ? pack_bf16x2(q[d + 8] * qs, q[d + 9] * qs) : 0u;
        }
    }

    const uint32_t *table = p.block_tables + static_cast<size_t>(s) * p.max_blocks;
    const uint16_t *kbase = p.k_cache + kvh * D, *vbase = p.v_cache + kvh * D;
    const uint32_t ch = lane % CH;
    // Stage tile j (positions 16j ..) into ring slot st; lane takes chunk ch of rows lane / CH + ROWS·n.
    auto load_tile = [&](uint32_t j, uint32_t st) {
#pragma unroll
        for (int rr = lane / CH; rr < MMA_TILE; rr += ROWS) {
            const uint32_t k = j * MMA_TILE + rr;
            const bool ok = k < hi;
            size_t slot = 0;
            if (ok) {
                const uint32_t pos = k < start ? k : start + (tree ? static_cast<uint32_t>(mma_anc[k - start]) : k - start);
                slot = static_cast<size_t>(table[pos / p.block_size]) * p.block_size + pos % p.block_size;
            }
            const uint32_t at = rr * D + ((ch ^ (rr & 7)) * 8);
            cp_async16(smem_u32(&ks[st][at]), kbase + slot * kvd + ch * 8, ok ? 16 : 0);
            cp_async16(smem_u32(&vs[st][at]), vbase + slot * kvd + ch * 8, ok ? 16 : 0);
        }
    };

    float o[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.f;
    float m = -INFINITY, l = 0.f;  // row r's running max (base 2) and this lane's share of its sum

#pragma unroll
    for (uint32_t st = 0; st < MMA_STAGES - 1; ++st) {
        if (t_lo + st < t_hi) load_tile(t_lo + st, st);
        cp_async_commit();
    }
    // ldmatrix row addresses: lane feeds row lane % 8 of matrix lane / 8.
    const uint32_t mi = lane >> 3;
    const uint32_t k_row = (mi >> 1) * 8 + (lane & 7), k_half = mi & 1;  // K: (pos half, dim half)
    const uint32_t v_row = (mi & 1) * 8 + (lane & 7), v_next = mi >> 1;  // V: (pos half, n-tile)
    for (uint32_t j = t_lo; j < t_hi; ++j) {
        const uint32_t st = (j - t_lo) % MMA_STAGES;
        {
            const uint32_t nj = j + MMA_STAGES - 1;
            if (nj < t_hi) load_tile(nj, (nj - t_lo) % MMA_STAGES);
            cp_async_commit();
        }
        cp_async_wait<MMA_STAGES - 1>();
        __syncwarp();

        // Scores of positions c2, c2 + 1 (sc[0]) and 8 + c2, 9 + c2 (sc[1]) for head r.
        float sc[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
        for (int kt = 0; kt < KT; ++kt) {
            uint32_t b[4];
            const uint32_t c = 2 * kt + k_half;
            ldsm_x4(smem_u32(&ks[st][k_row * D + ((c ^ (k_row & 7)) * 8)]), b);
            mma_rows8(sc[0], qa[kt][0], qa[kt][1], b[0], b[1]);
            mma_rows8(sc[1], qa[kt][0], qa[kt][1], b[2], b[3]);
        }
        const uint32_t k0 = j * MMA_TILE + c2;
        float v[4] = {sc[0][0], sc[0][1], sc[1][0], sc[1][1]};
        const uint32_t kk[4] = {k0, k0 + 1, k0 + 8, k0 + 9};
        float mt = -INFINITY;
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            if (kk[e] >= hi) v[e] = -INFINITY;
            mt = fmaxf(mt, v[e]);
        }
        mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 1));
        mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 2));
        const float m_new = fmaxf(m, mt);  // finite: a tile's first position is always visible
        const float corr = exp2f(m - m_new);  // 0 on the first tile (m = -inf)
        float pr[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) pr[e] = exp2f(v[e] - m_new);
        l = l * corr + (pr[0] + pr[1]) + (pr[2] + pr[3]);
        m = m_new;
        const uint32_t pa0 = pack_bf16x2(pr[0], pr[1]), pa2 = pack_bf16x2(pr[2], pr[3]);
#pragma unroll
        for (int nt = 0; nt < NT; nt += 2) {
            uint32_t b[4];
            const uint32_t c = nt + v_next;
            ldsm_x4_trans(smem_u32(&vs[st][v_row * D + ((c ^ (v_row & 7)) * 8)]), b);
            o[nt][0] *= corr;
            o[nt][1] *= corr;
            o[nt + 1][0] *= corr;
            o[nt + 1][1] *= corr;
            mma_rows8(o[nt], pa0, pa2, b[0], b[1]);
            mma_rows8(o[nt + 1], pa0, pa2, b[2], b[3]);
        }
        __syncwarp();  // every lane's ldmatrix of slot st is done before it is refilled
    }
    cp_async_wait<0>();

    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    if (r >= G) return;
    const uint32_t h = kvh * G + r;
    if (p.num_splits == 1) {
        uint16_t *out = p.out + static_cast<size_t>(t) * p.n_heads * D + h * D + c2;
        const float inv = 1.f / l;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
            *reinterpret_cast<uint32_t *>(out + nt * 8) = pack_bf16x2(o[nt][0] * inv, o[nt][1] * inv);
    } else {
        float *part = p.partial + ((static_cast<size_t>(split) * p.tokens + t) * p.n_heads + h) * (D + 2);
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
            part[nt * 8 + c2] = o[nt][0];
            part[nt * 8 + c2 + 1] = o[nt][1];
        }
        if ((lane & 3) == 0) {
            part[D] = m * 0.6931471805599453f;  // back to natural units (ln 2)
            part[D + 1] = l;
        }
    }
}

#define MMA_KERNEL(G, D)                                                                           \
    extern "C" __global__ void __launch_bounds__(32) paged_attn_mma##G##_d##D##_kernel(PagedAttnParams p) { \
        paged_attn_mma<G, D>(p);                                                                   \
    }
#define MMA_KERNELS(G) MMA_KERNEL(G, 64) MMA_KERNEL(G, 128)
MMA_KERNELS(1)
MMA_KERNELS(2)
MMA_KERNELS(3)
MMA_KERNELS(4)
MMA_KERNELS(5)
MMA_KERNELS(6)
MMA_KERNELS(7)
MMA_KERNELS(8)
