// Block-level pieces shared by the sampling and verification kernels (sampling.cu,
// tree_verify.cu): Philox4x32-10, the fixed-point masses of vpd_sampling::kernel_ref, u64 block
// reductions, argmax and the inverse-CDF pick. One block of SAMPLING_THREADS threads per row.
#pragma once
#include "vpd_common.cuh"

#define SAMPLING_THREADS 1024
constexpr int NWARPS = SAMPLING_THREADS / 32;
constexpr unsigned FULL = 0xffffffffu;
constexpr uint32_t NONE = 0xffffffffu;

// ---- Philox4x32-10 (same constants as crates/vpd-sampling/src/philox.rs) -------------------
static __device__ uint4 philox(uint64_t seed, uint64_t offset, uint32_t row, uint32_t pos) {
    uint32_t c0 = row, c1 = pos, c2 = static_cast<uint32_t>(offset), c3 = static_cast<uint32_t>(offset >> 32);
    uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
#pragma unroll
    for (int r = 0; r < 10; ++r) {
        if (r > 0) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        const uint32_t hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
        const uint32_t hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
    }
    return make_uint4(c0, c1, c2, c3);
}
static __device__ __forceinline__ float accept_uniform(uint4 w) { return static_cast<float>(w.x >> 8) * (1.0f / 16777216.0f); }
static __device__ __forceinline__ uint64_t draw_bits(uint4 w) { return (static_cast<uint64_t>(w.z) << 32) | w.w; }

// ---- the arithmetic of kernel_ref ------------------------------------------------------------
static __device__ __forceinline__ uint64_t fx(float w) {
    return w > 0.f ? static_cast<uint64_t>(__fmul_rn(fminf(w, 1.f), 17592186044416.f)) : 0ull;  // 2^44
}
static __device__ __forceinline__ float pos(float x) { return x > 0.f ? x : 0.f; }

static __device__ __forceinline__ uint64_t key64(float x, uint32_t id) {
    if (isnan(x)) x = -INFINITY;
    if (x == 0.f) x = 0.f;  // -0 ranks as +0
    const uint32_t b = __float_as_uint(x);
    const uint32_t k = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
    return (static_cast<uint64_t>(k) << 32) | (0xffffffffu - id);
}

// ---- block reductions over u64 ---------------------------------------------------------------
template <bool MAX>
static __device__ uint64_t block_reduce_u64(uint64_t v) {
    __shared__ uint64_t s[NWARPS];
    for (int o = 16; o > 0; o >>= 1) {
        const uint64_t y = __shfl_xor_sync(FULL, v, o);
        v = MAX ? max(v, y) : v + y;
    }
    __syncthreads();  // s may still be read by a previous call
    if ((threadIdx.x & 31) == 0) s[threadIdx.x >> 5] = v;
    __syncthreads();
    uint64_t r = 0;
    for (int w = 0; w < NWARPS; ++w) r = MAX ? max(r, s[w]) : r + s[w];
    return r;
}

constexpr uint32_t UNROLL = 8;  // independent loads in flight per thread

// Index of the best key in a row: the first maximum, NaN = -inf (= vpd_sampling::argmax).
static __device__ uint32_t block_argmax(const float *x, uint32_t n) {
    uint64_t best = 0;
    for (uint32_t i0 = threadIdx.x; i0 < n; i0 += SAMPLING_THREADS * UNROLL) {
        float v[UNROLL];
#pragma unroll
        for (uint32_t u = 0; u < UNROLL; ++u) {
            const uint32_t i = i0 + u * SAMPLING_THREADS;
            v[u] = i < n ? x[i] : -INFINITY;
        }
#pragma unroll
        for (uint32_t u = 0; u < UNROLL; ++u) {
            const uint32_t i = i0 + u * SAMPLING_THREADS;
            if (i < n) best = max(best, key64(v[u], i));
        }
    }
    return 0xffffffffu - static_cast<uint32_t>(block_reduce_u64<true>(best));
}

// Exclusive prefix sum over the block in thread order.
static __device__ uint64_t block_excl_scan_u64(uint64_t v) {
    __shared__ uint64_t s[NWARPS];
    const uint32_t warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    uint64_t inc = v;
    for (int o = 1; o < 32; o <<= 1) {
        const uint64_t y = __shfl_up_sync(FULL, inc, o);
        if (lane >= static_cast<uint32_t>(o)) inc += y;
    }
    __syncthreads();  // s may still be read by a previous call
    if (lane == 31) s[warp] = inc;
    __syncthreads();
    uint64_t before = 0;
    for (uint32_t w = 0; w < warp; ++w) before += s[w];
    return before + inc - v;
}

// Inverse-CDF pick: the first i (id order) whose inclusive prefix of m(i) exceeds
// floor(bits * total / 2^64); NONE when the total is 0. Pass 1: each warp sums a contiguous
// segment (coalesced, UNROLL loads in flight). Pass 2: the whole block splits the segment
// holding the target into per-thread runs, scans their sums, and one thread walks its run.
template <class M>
static __device__ uint32_t block_pick(const M &m, uint32_t n, uint64_t bits) {
    __shared__ uint64_t wsum[NWARPS];
    __shared__ uint32_t found;
    const uint32_t warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const uint32_t seg = (n + NWARPS - 1) / NWARPS;
    {
        const uint32_t lo = min(warp * seg, n), hi = min(lo + seg, n);
        uint64_t s = 0;
        for (uint32_t i0 = lo + lane; i0 < hi; i0 += 32 * UNROLL) {
            uint64_t v[UNROLL];
#pragma unroll
            for (uint32_t u = 0; u < UNROLL; ++u) {
                const uint32_t i = i0 + 32 * u;
                v[u] = i < hi ? m(i) : 0;
            }
#pragma unroll
            for (uint32_t u = 0; u < UNROLL; ++u) s += v[u];
        }
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(FULL, s, o);
        __syncthreads();  // wsum and found may still be read by a previous call
        if (lane == 0) wsum[warp] = s;
        if (threadIdx.x == 0) found = NONE;
        __syncthreads();
    }
    uint64_t total = 0;
    for (uint32_t w = 0; w < NWARPS; ++w) total += wsum[w];
    if (total > 0) {  // block-uniform
        uint64_t t = __umul64hi(bits, total);
        uint32_t owner = 0;
        while (owner + 1 < NWARPS && t >= wsum[owner]) t -= wsum[owner++];  // t < wsum[owner] now
        const uint32_t lo = min(owner * seg, n), hi = min(lo + seg, n);
        const uint32_t run = (seg + SAMPLING_THREADS - 1) / SAMPLING_THREADS;
        const uint32_t a = min(lo + threadIdx.x * run, hi), b = min(a + run, hi);
        uint64_t s = 0;
        for (uint32_t i = a; i < b; ++i) s += m(i);
        uint64_t cum = block_excl_scan_u64(s);
        if (cum <= t && t < cum + s) {
            for (uint32_t i = a; i < b; ++i) {
                cum += m(i);
                if (cum > t) {
                    found = i;
                    break;
                }
            }
        }
    }
    __syncthreads();
    return found;
}

// Draws from a probability row (fixed-point masses); argmax when it has no mass.
static __device__ uint32_t draw_row(const float *pr, uint32_t n, uint64_t bits) {
    const uint32_t got = block_pick([&](uint32_t i) { return fx(pr[i]); }, n, bits);
    return got != NONE ? got : block_argmax(pr, n);
}

