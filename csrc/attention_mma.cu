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
// One block per (query group, KV head, split). In paged_attn_mma the group is one token
// (decode, tree tokens) and the block one warp. In paged_attn_mmaq (verification, prefill
// chunks) it is up to MMA_TILE_WARPS(G) · 16 / G consecutive chain tokens of one sequence,
// at least 8: each warp takes a query tile of 16 / G of them, and the warps share the
// block's staged K/V tiles. A sequence's K/V is then read once for all of them, not once a
// token, and once a token is what a verify forward of L + 1 tokens a sequence spent its time
// on (docs/perf.md, "Verify attention"). Row ρ of a warp's m16n8k16 products is head ρ % G
// of its tile's token ρ / G (rows past the tile's heads are zero), each masked at its own
// token's causal end:
//   S  = Q · Kᵀ  : A = Q (16 rows × 16 dims, registers), B = Kᵀ (ldmatrix of K rows), per
//                  8 positions;
//   O += P · V   : A = P, the score fragment itself rounded to bf16 (FlashAttention-2's
//                  register reuse), B = V (ldmatrix.trans of V rows), per 8 head elements.
// The softmax runs in base 2 (q pre-scaled by log2 e); the split partial stores its max in
// natural units, as attn_combine_kernel expects. K/V tiles of 16 positions go through a ring
// of MMA_STAGES shared buffers, their 16-byte chunks XOR-swizzled by row so that ldmatrix
// reads no bank twice. A split covers whole tiles of the group's last token. Positions past the
// split's end are loaded as zeros (cp.async zero-fill: no NaN from stale memory can reach
// P · V) and masked to -inf; a row that sees nothing in a split leaves max -inf and sum 0,
// which attn_combine_kernel skips.
#include "vpd_common.cuh"
#include "vpd_params.h"

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

// c += A · B for one m16n8k16 tile (a[1], a[3]: rows 8..15, zero when unused).
static __device__ __forceinline__ void mma16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats as bf16x2, `lo` in the low half (the even column of a fragment).
static __device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t *>(&v);
}

// Warps of a block in the query-tile kernel: enough tiles of MMA_TILE / G tokens for
// MMA_BLOCK_TOKENS chain tokens (vpd_params.h; the backend's mma_tile_warps).
#define MMA_TILE_WARPS(G) \
    ((MMA_BLOCK_TOKENS + MMA_TILE / (G) - 1) / (MMA_TILE / (G)))

// Block-wide barrier; a one-warp block needs only the warp's.
template <int NW>
static __device__ __forceinline__ void block_sync() {
    if constexpr (NW == 1) __syncwarp(); else __syncthreads();
}

template <int G, int D, int QT, int NW>
static __device__ __forceinline__ void paged_attn_mma(const PagedAttnParams &p) {
    constexpr int CH = D / 8;          // 16-byte chunks of a K or V row
    constexpr int ROWS = 32 * NW / CH; // rows one pass of the block's loads covers
    constexpr int KT = D / 16;         // k-steps of Q · Kᵀ
    constexpr int NT = D / 8;          // n-tiles of P · V
    constexpr int HALVES = QT * G > 8 ? 2 : 1;  // rows 8..15 of the tiles in use
    static_assert(QT * G <= 16, "a warp's query rows fit one 16-row tile");
    __shared__ __align__(128) uint16_t ks[MMA_STAGES][MMA_TILE * D];
    __shared__ __align__(128) uint16_t vs[MMA_STAGES][MMA_TILE * D];
    extern __shared__ int32_t mma_anc[];  // [max_tree] ancestor chain of a tree token
    __shared__ uint32_t mma_n_anc;

    const uint32_t t = blockIdx.x, kvh = blockIdx.y, split = blockIdx.z;
    const uint32_t tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const uint32_t kvd = p.n_kv_heads * D;
    const uint32_t s = p.tok_seq[t];
    const uint32_t tok0 = p.seq_tok_start[s];
    const uint32_t i = t - tok0;
    const uint32_t start = p.seq_start_pos[s];
    const bool tree = p.seq_is_tree[s] != 0;
    // Chain tokens i .. i + nb - 1 share this block, QT·NW of them from each multiple of QT·NW
    // (the blocks of the others have nothing to do); warp w takes QT of them from i + w·QT. A
    // tree token goes alone, to warp 0.
    uint32_t nb = 1;
    if (QT > 1 && !tree) {
        if (i % (QT * NW) != 0) return;
        nb = min(static_cast<uint32_t>(QT * NW), p.seq_tok_start[s + 1] - t);
    }
    const uint32_t w0 = warp * QT;  // this warp's first token, from i
    const uint32_t nq = nb > w0 ? min(static_cast<uint32_t>(QT), nb - w0) : 0;
    uint32_t n_new = i + nb;
    if (tree) {
        if (tid == 0) {
            uint32_t n = 0;
            for (int32_t k = static_cast<int32_t>(i); k >= 0; k = p.parents[tok0 + k]) mma_anc[n++] = k;
            mma_n_anc = n;
        }
        block_sync<NW>();
        n_new = mma_n_anc;
    }
    const uint32_t total = start + n_new;  // positions the last token sees, in order k = 0 .. total - 1
    const uint32_t tiles = (total + MMA_TILE - 1) / MMA_TILE;
    const uint32_t per = (tiles + p.num_splits - 1) / p.num_splits;
    const uint32_t t_lo = min(tiles, split * per), t_hi = min(tiles, t_lo + per);
    const uint32_t hi = min(total, t_hi * MMA_TILE);

    // This lane's rows r and r + 8: row ρ is head ρ % G of token i + w0 + ρ / G. Rows past nq·G
    // are zero and unmasked; a token's row is masked past its own causal end.
    const uint32_t r = lane >> 2, c2 = (lane & 3) * 2;
    bool row_ok[HALVES];
    uint32_t row_tok[HALVES], row_head[HALVES], row_end[HALVES];
#pragma unroll
    for (int h = 0; h < HALVES; ++h) {
        const uint32_t rho = r + 8 * h, qi = rho / G;
        row_ok[h] = qi < nq;
        row_tok[h] = t + (row_ok[h] ? w0 + qi : 0);
        row_head[h] = kvh * G + rho % G;
        row_end[h] = min(hi, row_ok[h] ? total - (nb - 1 - (w0 + qi)) : total);
    }
    // Q fragment, per k-step: a0 = (row r, columns c2, c2 + 1), a1 = (row r + 8, the same),
    // a2 = (row r, c2 + 8, + 9), a3 = (row r + 8, the same).
    uint32_t qa[KT][4];
    {
        const float qs = p.scale * 1.4426950408889634f;  // log2(e): exp2 below
#pragma unroll
        for (int kt = 0; kt < KT; ++kt) qa[kt][0] = qa[kt][1] = qa[kt][2] = qa[kt][3] = 0u;
#pragma unroll
        for (int h = 0; h < HALVES; ++h) {
            if (!row_ok[h]) continue;
            const float *q = p.q + static_cast<size_t>(row_tok[h]) * p.q_stride + row_head[h] * D;
#pragma unroll
            for (int kt = 0; kt < KT; ++kt) {
                const int d = kt * 16 + c2;
                qa[kt][h] = pack_bf16x2(q[d] * qs, q[d + 1] * qs);
                qa[kt][h + 2] = pack_bf16x2(q[d + 8] * qs, q[d + 9] * qs);
            }
        }
    }

    const uint32_t *table = p.block_tables + static_cast<size_t>(s) * p.max_blocks;
    const uint16_t *kbase = p.k_cache + kvh * D, *vbase = p.v_cache + kvh * D;
    const uint32_t ch = tid % CH;
    // Stage tile j (positions 16j ..) into ring slot st; thread tid takes chunk ch of rows
    // tid / CH + ROWS·n. Every warp of the block loads and reads the same tiles.
    auto load_tile = [&](uint32_t j, uint32_t st) {
#pragma unroll
        for (int rr = tid / CH; rr < MMA_TILE; rr += ROWS) {
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

    float o[NT][4];  // o[nt][0..1]: row r, o[nt][2..3]: row r + 8
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.f;
    float m[HALVES], l[HALVES];  // each row's running max (base 2) and this lane's share of its sum
#pragma unroll
    for (int h = 0; h < HALVES; ++h) m[h] = -INFINITY, l[h] = 0.f;

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
        block_sync<NW>();
        if (nq > 0) {  // a warp past the block's last token only helps with the loads
            // Scores of positions c2, c2 + 1 (sc[0]) and 8 + c2, 9 + c2 (sc[1]): [0..1] row r, [2..3] row r + 8.
            float sc[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
            for (int kt = 0; kt < KT; ++kt) {
                uint32_t b[4];
                const uint32_t c = 2 * kt + k_half;
                ldsm_x4(smem_u32(&ks[st][k_row * D + ((c ^ (k_row & 7)) * 8)]), b);
                mma16(sc[0], qa[kt], b[0], b[1]);
                mma16(sc[1], qa[kt], b[2], b[3]);
            }
            const uint32_t k0 = j * MMA_TILE + c2;
            const uint32_t kk[4] = {k0, k0 + 1, k0 + 8, k0 + 9};
            float pr[HALVES][4], corr[HALVES];
#pragma unroll
            for (int h = 0; h < HALVES; ++h) {
                float v[4] = {sc[0][2 * h], sc[0][2 * h + 1], sc[1][2 * h], sc[1][2 * h + 1]};
                float mt = -INFINITY;
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    if (kk[e] >= row_end[h]) v[e] = -INFINITY;
                    mt = fmaxf(mt, v[e]);
                }
                mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 1));
                mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 2));
                const float m_new = fmaxf(m[h], mt);
                // -inf while the row has seen no visible position (a later token's tail, split-K).
                const float base = m_new == -INFINITY ? 0.f : m_new;
                corr[h] = exp2f(m[h] - base);  // 0 until the row's first visible position
#pragma unroll
                for (int e = 0; e < 4; ++e) pr[h][e] = exp2f(v[e] - base);
                l[h] = l[h] * corr[h] + (pr[h][0] + pr[h][1]) + (pr[h][2] + pr[h][3]);
                m[h] = m_new;
            }
            // P as the A operand, in the Q fragment's layout.
            uint32_t pa[4] = {pack_bf16x2(pr[0][0], pr[0][1]), 0u, pack_bf16x2(pr[0][2], pr[0][3]), 0u};
            if constexpr (HALVES == 2) {
                pa[1] = pack_bf16x2(pr[HALVES - 1][0], pr[HALVES - 1][1]);
                pa[3] = pack_bf16x2(pr[HALVES - 1][2], pr[HALVES - 1][3]);
            }
#pragma unroll
            for (int nt = 0; nt < NT; nt += 2) {
                uint32_t b[4];
                const uint32_t c = nt + v_next;
                ldsm_x4_trans(smem_u32(&vs[st][v_row * D + ((c ^ (v_row & 7)) * 8)]), b);
#pragma unroll
                for (int h = 0; h < HALVES; ++h) {
                    o[nt][2 * h] *= corr[h];
                    o[nt][2 * h + 1] *= corr[h];
                    o[nt + 1][2 * h] *= corr[h];
                    o[nt + 1][2 * h + 1] *= corr[h];
                }
                mma16(o[nt], pa, b[0], b[1]);
                mma16(o[nt + 1], pa, b[2], b[3]);
            }
        }
        block_sync<NW>();  // every thread's ldmatrix of slot st is done before it is refilled
    }
    cp_async_wait<0>();

#pragma unroll
    for (int h = 0; h < HALVES; ++h) {
        l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
        l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
        if (!row_ok[h]) continue;
        if (p.num_splits == 1) {
            uint16_t *out = p.out + static_cast<size_t>(row_tok[h]) * p.n_heads * D + row_head[h] * D + c2;
            const float inv = 1.f / l[h];
#pragma unroll
            for (int nt = 0; nt < NT; ++nt)
                *reinterpret_cast<uint32_t *>(out + nt * 8) = pack_bf16x2(o[nt][2 * h] * inv, o[nt][2 * h + 1] * inv);
        } else {
            float *part =
                p.partial + ((static_cast<size_t>(split) * p.tokens + row_tok[h]) * p.n_heads + row_head[h]) * (D + 2);
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
                part[nt * 8 + c2] = o[nt][2 * h];
                part[nt * 8 + c2 + 1] = o[nt][2 * h + 1];
            }
            if ((lane & 3) == 0) {
                part[D] = m[h] * 0.6931471805599453f;  // back to natural units (ln 2); -inf: nothing seen
                part[D + 1] = l[h];
            }
        }
    }
}

// paged_attn_mma<G>_d<D>: one token a one-warp block (decode, trees). paged_attn_mmaq<G>_d<D>:
// MMA_TILE_WARPS(G) warps of 16 / G chain tokens each (verification, prefill) share a block and
// its K/V tiles, so those tokens' K/V is read once, not once a token.
#define MMA_KERNEL(G, D)                                                                           \
    extern "C" __global__ void __launch_bounds__(32) paged_attn_mma##G##_d##D##_kernel(PagedAttnParams p) { \
        paged_attn_mma<G, D, 1, 1>(p);                                                             \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(32 * MMA_TILE_WARPS(G))                           \
        paged_attn_mmaq##G##_d##D##_kernel(PagedAttnParams p) {                                    \
        paged_attn_mma<G, D, 16 / G, MMA_TILE_WARPS(G)>(p);                                        \
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
