// Fused sampling and chain speculative verification, one block per row.
//
// Algorithms: temperature -> top-k -> top-p (Hugging Face's logits-warper order; nucleus
// sampling of Holtzman et al. 2020) and chain speculative sampling (Leviathan et al. 2023,
// "Fast Inference from Transformers via Speculative Decoding"; Chen et al. 2023). Random
// numbers: Philox4x32-10 (Salmon et al. 2011, "Parallel Random Numbers: As Easy as 1, 2, 3"),
// counter = (row, position, offset), key = seed, so nothing is carried between launches and the
// host never synchronises. Top-k and top-p thresholds are found by an 8-pass radix select over
// the 64-bit ranking key (logit order, then lower id), with no sort.
//
// Every mass is a fixed-point integer (w * 2^44) and exp is a fixed sequence of IEEE operations
// (__fmul_rn/__fadd_rn are never fused), so sums are order-independent and the CPU function
// vpd_sampling::kernel_ref reproduces each token exactly; see its header for the definitions.
#include "vpd_common.cuh"
#include "vpd_params.h"

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

static __device__ float exp_det(float d) {
    if (!(d > -32.f)) return 0.f;
    const float k = rintf(__fmul_rn(d, __uint_as_float(0x3fb8aa3bu)));
    const float r = __fsub_rn(__fsub_rn(d, __fmul_rn(k, __uint_as_float(0x3f317200u))), __fmul_rn(k, __uint_as_float(0x35bfbe8eu)));
    float p = __uint_as_float(0x3ab60b61u);
    p = __fadd_rn(__fmul_rn(p, r), __uint_as_float(0x3c088889u));
    p = __fadd_rn(__fmul_rn(p, r), __uint_as_float(0x3d2aaaabu));
    p = __fadd_rn(__fmul_rn(p, r), __uint_as_float(0x3e2aaaabu));
    p = __fadd_rn(__fmul_rn(p, r), __uint_as_float(0x3f000000u));
    p = __fadd_rn(__fmul_rn(p, r), 1.f);
    p = __fadd_rn(__fmul_rn(p, r), 1.f);
    return __fmul_rn(p, __int_as_float((static_cast<int>(k) + 127) << 23));
}

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

// Radix select: the key of the first candidate (key >= cut, best first) whose inclusive
// cumulative weight reaches `target`; `cut` when there is none. 8 passes of 8 bits.
template <class W>
static __device__ uint64_t radix_select(const float *x, uint32_t n, uint64_t cut, uint64_t target, const W &wt) {
    __shared__ uint32_t cnt[256];
    __shared__ unsigned long long ws[256];
    __shared__ uint64_t s_prefix, s_target;
    __shared__ int s_ok;
    uint64_t prefix = 0, mask = 0;
    for (int d = 7; d >= 0; --d) {
        for (uint32_t b = threadIdx.x; b < 256; b += SAMPLING_THREADS) {
            cnt[b] = 0;
            ws[b] = 0;
        }
        __syncthreads();
        // Warp-aggregated histogram: lanes with the same bin add once (the top digits are
        // shared by most of the vocabulary, so plain shared atomics would serialise).
        for (uint32_t i0 = 0; i0 < n; i0 += SAMPLING_THREADS) {
            const uint32_t i = i0 + threadIdx.x;
            const uint64_t k = i < n ? key64(x[i], i) : 0;
            const bool cand = i < n && k >= cut && (k & mask) == prefix;
            const uint32_t bin = cand ? static_cast<uint32_t>(k >> (8 * d)) & 255u : 256u;
            const uint64_t w = cand ? wt(i) : 0;  // <= 2^44: two 22-bit halves sum exactly in u32
            const unsigned peers = __match_any_sync(FULL, bin);
            const uint32_t whi = __reduce_add_sync(peers, static_cast<uint32_t>(w >> 22));
            const uint32_t wlo = __reduce_add_sync(peers, static_cast<uint32_t>(w & 0x3fffffu));
            if (cand && (threadIdx.x & 31) == static_cast<uint32_t>(__ffs(peers) - 1)) {
                atomicAdd(&cnt[bin], static_cast<uint32_t>(__popc(peers)));
                const uint64_t sum = (static_cast<uint64_t>(whi) << 22) + wlo;
                if (sum) atomicAdd(&ws[bin], static_cast<unsigned long long>(sum));
            }
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            uint64_t acc = 0;
            int chosen = -1;
            for (int b = 255; b >= 0; --b) {
                if (!cnt[b]) continue;
                if (acc + ws[b] >= target) {
                    chosen = b;
                    break;
                }
                acc += ws[b];
            }
            s_ok = chosen >= 0;
            s_prefix = prefix | (static_cast<uint64_t>(chosen < 0 ? 0 : chosen) << (8 * d));
            s_target = target - acc;
        }
        __syncthreads();
        if (!s_ok) return cut;
        prefix = s_prefix;
        target = s_target;
        mask |= 0xffull << (8 * d);
        __syncthreads();  // s_* are rewritten by the next pass
    }
    return prefix;
}

struct Weight {  // softmax numerator exp(x·(1/T) - max·(1/T)), +inf logits sharing the mass
    const float *x;
    float inv_t, zm;
    __device__ float operator()(uint32_t i) const {
        const float v = x[i];
        const float z = isnan(v) ? -INFINITY : __fmul_rn(v, inv_t);
        if (zm == INFINITY) return z == INFINITY ? 1.f : 0.f;
        return exp_det(__fsub_rn(z, zm));
    }
};

extern "C" __global__ void __launch_bounds__(SAMPLING_THREADS, 1) sample_kernel(SampleParams p) {
    const uint32_t row = blockIdx.x;
    if (row >= p.rows) return;
    const float *x = p.logits + static_cast<size_t>(row) * p.vocab;
    const uint32_t best = block_argmax(x, p.vocab);
    const float t = p.temperature[row];
    const float xm = x[best];
    uint32_t tok = best;
    if (t > 0.f && !isnan(xm) && xm != -INFINITY) {
        const float inv_t = __fdiv_rn(1.f, t);
        const Weight w{x, inv_t, __fmul_rn(xm, inv_t)};
        const auto mass = [&](uint32_t i) { return fx(w(i)); };
        uint64_t cut = 0;  // keep keys >= cut; every key64 is > 0
        const uint32_t k = p.top_k[row];
        if (k > 0 && k < p.vocab) cut = radix_select(x, p.vocab, 0, k, [](uint32_t) { return 1ull; });
        const float tp = p.top_p[row];
        if (tp < 1.f) {
            uint64_t s = 0;
            for (uint32_t i = threadIdx.x; i < p.vocab; i += SAMPLING_THREADS)
                if (key64(x[i], i) >= cut) s += mass(i);
            const uint64_t total = block_reduce_u64<false>(s);
            const uint64_t tgt = min(static_cast<uint64_t>(__double2ull_rz(__dmul_rn(static_cast<double>(tp), __ull2double_rn(total)))), total);
            cut = max(cut, radix_select(x, p.vocab, cut, tgt, mass));
        }
        const uint64_t bits = draw_bits(philox(p.seed[row], p.offset, row, 0));
        const uint32_t got =
            cut == 0 ? block_pick(mass, p.vocab, bits)
                     : block_pick([&](uint32_t i) { return key64(x[i], i) >= cut ? mass(i) : 0ull; }, p.vocab, bits);
        if (got != NONE) tok = got;
    }
    if (threadIdx.x == 0) p.out[row] = tok;
}

// Draws from a probability row (fixed-point masses); argmax when it has no mass.
static __device__ uint32_t draw_row(const float *pr, uint32_t n, uint64_t bits) {
    const uint32_t got = block_pick([&](uint32_t i) { return fx(pr[i]); }, n, bits);
    return got != NONE ? got : block_argmax(pr, n);
}

extern "C" __global__ void __launch_bounds__(SAMPLING_THREADS, 1) chain_verify_kernel(ChainVerifyParams p) {
    const uint32_t row = blockIdx.x;
    if (row >= p.rows) return;
    const size_t v = p.vocab;
    const uint32_t l = min(p.num_drafts[row], p.max_draft);
    const uint32_t *drafts = p.draft_tokens + static_cast<size_t>(row) * p.max_draft;
    const float *target = p.target + static_cast<size_t>(row) * (p.max_draft + 1) * v;
    const float *draft = p.draft + static_cast<size_t>(row) * p.max_draft * v;
    const uint64_t seed = p.seed[row];
    __shared__ uint32_t s_acc;
    if (threadIdx.x == 0) {
        uint32_t i = 0;
        for (; i < l; ++i) {
            const uint32_t xi = drafts[i];
            const float u = accept_uniform(philox(seed, p.offset, row, i));
            const double px = xi < p.vocab ? pos(target[i * v + xi]) : 0.0;
            const double qx = xi < p.vocab ? pos(draft[i * v + xi]) : 0.0;
            // u * q(x) < p(x) in f64: the product of two 24-bit significands is exact.
            if (!(qx > 0.0 && static_cast<double>(u) * qx < px)) break;
        }
        s_acc = i;
    }
    __syncthreads();
    const uint32_t j = s_acc;
    const uint64_t bits = draw_bits(philox(seed, p.offset, row, j));
    uint32_t tok;
    if (j < l) {
        const float *pr = target + j * v, *qr = draft + j * v;
        tok = block_pick([&](uint32_t i) { return fx(pos(pr[i]) - pos(qr[i])); }, p.vocab, bits);
        if (tok == NONE) tok = draw_row(pr, p.vocab, bits);  // p == q: the residual is p itself
    } else {
        tok = draw_row(target + l * v, p.vocab, bits);
    }
    uint32_t *out = p.out_tokens + static_cast<size_t>(row) * (p.max_draft + 1);
    for (uint32_t i = threadIdx.x; i < j; i += SAMPLING_THREADS) out[i] = drafts[i];
    if (threadIdx.x == 0) {
        out[j] = tok;
        p.accepted[row] = j;
    }
}

extern "C" __global__ void __launch_bounds__(SAMPLING_THREADS, 1) chain_verify_greedy_kernel(ChainVerifyParams p) {
    const uint32_t row = blockIdx.x;
    if (row >= p.rows) return;
    const size_t v = p.vocab;
    const uint32_t l = min(p.num_drafts[row], p.max_draft);
    const uint32_t *drafts = p.draft_tokens + static_cast<size_t>(row) * p.max_draft;
    const float *target = p.target + static_cast<size_t>(row) * (p.max_draft + 1) * v;
    uint32_t j = 0, tok = 0;
    for (;; ++j) {
        tok = block_argmax(target + j * v, p.vocab);
        if (j == l || drafts[j] != tok) break;
    }
    uint32_t *out = p.out_tokens + static_cast<size_t>(row) * (p.max_draft + 1);
    for (uint32_t i = threadIdx.x; i < j; i += SAMPLING_THREADS) out[i] = drafts[i];
    if (threadIdx.x == 0) {
        out[j] = tok;
        p.accepted[row] = j;
    }
}
