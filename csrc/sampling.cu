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
#include "vpd_params.h"
#include "vpd_sampling.cuh"

// exp for d <= 0 with kernel_ref::exp_det's exact operation sequence.
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

// Candidates the radix select compacts into shared memory once its chosen bin holds this few:
// the remaining passes then read 16 bytes a candidate from shared memory instead of the whole
// row from global memory. After the first two digits (sign, exponent, 7 bits of mantissa) the
// chosen bin of a top-k or top-p cut over an LLM's logits rarely holds more than a few hundred.
#define SELECT_CAP 2048
// At file scope so that the two instantiations in sample_kernel (top-k, top-p), which run one
// after the other, share one 32 KiB buffer instead of adding two to the block's static total.
static __shared__ uint64_t sel_key[SELECT_CAP];
static __shared__ uint64_t sel_w[SELECT_CAP];

// Radix select: the key of the first candidate (key >= cut, best first) whose inclusive
// cumulative weight reaches `target`; `cut` when there is none. 8 passes of 8 bits, over the
// whole row until the chosen bin holds at most SELECT_CAP candidates, then over those alone
// (the same histograms, so the same key: the sums are integers).
template <class W>
static __device__ uint64_t radix_select(const float *x, uint32_t n, uint64_t cut, uint64_t target, const W &wt) {
    __shared__ uint32_t cnt[256];
    __shared__ unsigned long long ws[256];
    __shared__ uint64_t s_prefix, s_target;
    __shared__ uint32_t s_count, s_nc;
    __shared__ int s_ok;
    uint64_t prefix = 0, mask = 0;
    bool compact = false;
    uint32_t nc = 0;
    for (int d = 7; d >= 0; --d) {
        for (uint32_t b = threadIdx.x; b < 256; b += SAMPLING_THREADS) {
            cnt[b] = 0;
            ws[b] = 0;
        }
        __syncthreads();
        if (compact) {
            for (uint32_t j = threadIdx.x; j < nc; j += SAMPLING_THREADS) {
                const uint64_t k = sel_key[j];
                if ((k & mask) != prefix) continue;
                const uint32_t bin = static_cast<uint32_t>(k >> (8 * d)) & 255u;
                atomicAdd(&cnt[bin], 1u);
                if (sel_w[j]) atomicAdd(&ws[bin], static_cast<unsigned long long>(sel_w[j]));
            }
        } else {
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
            s_count = chosen < 0 ? 0 : cnt[chosen];
            s_nc = 0;
        }
        __syncthreads();
        if (!s_ok) return cut;
        prefix = s_prefix;
        target = s_target;
        mask |= 0xffull << (8 * d);
        if (!compact && d > 0 && s_count <= SELECT_CAP) {
            // One more read of the row gathers the chosen bin's candidates and their weights.
            for (uint32_t i = threadIdx.x; i < n; i += SAMPLING_THREADS) {
                const uint64_t k = key64(x[i], i);
                if (k >= cut && (k & mask) == prefix) {
                    const uint32_t j = atomicAdd(&s_nc, 1u);
                    sel_key[j] = k;
                    sel_w[j] = wt(i);
                }
            }
            __syncthreads();
            nc = s_nc;
            compact = true;
        }
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

// Writes row `probs` as the kept masses over their total (one-hot at `best` when nothing is
// kept): the f64 quotient of two exact integers rounded to f32, as kernel_ref::probs_ref does.
template <class M>
static __device__ void write_probs(float *probs, uint32_t n, uint32_t best, const M &m) {
    uint64_t s = 0;
    for (uint32_t i = threadIdx.x; i < n; i += SAMPLING_THREADS) s += m(i);
    const uint64_t total = block_reduce_u64<false>(s);
    for (uint32_t i = threadIdx.x; i < n; i += SAMPLING_THREADS) {
        // m / total, not m * (1 / total): the quotient is correctly rounded on both sides.
        const double q = total ? __ddiv_rn(__ull2double_rn(m(i)), __ull2double_rn(total)) : (i == best ? 1.0 : 0.0);
        probs[i] = __double2float_rn(q);
    }
}

extern "C" __global__ void __launch_bounds__(SAMPLING_THREADS, 1) sample_kernel(SampleParams p) {
    const uint32_t row = blockIdx.x;
    if (row >= p.rows) return;
    const float *x = p.logits + static_cast<size_t>(row) * p.vocab;
    float *probs = p.probs ? p.probs + static_cast<size_t>(row) * p.vocab : nullptr;
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
        const uint4 words = p.counter ? philox(p.seed[row], p.counter[row], p.stream, 0) : philox(p.seed[row], p.offset, row, 0);
        const uint64_t bits = draw_bits(words);
        const auto kept = [&](uint32_t i) { return key64(x[i], i) >= cut ? mass(i) : 0ull; };
        const uint32_t got = cut == 0 ? block_pick(mass, p.vocab, bits) : block_pick(kept, p.vocab, bits);
        if (got != NONE) tok = got;
        if (probs) {
            if (cut == 0) write_probs(probs, p.vocab, best, mass);
            else write_probs(probs, p.vocab, best, kept);
        }
    } else if (probs) {
        for (uint32_t i = threadIdx.x; i < p.vocab; i += SAMPLING_THREADS) probs[i] = i == best ? 1.f : 0.f;
    }
    if (threadIdx.x == 0) p.out[row] = tok;
}

extern "C" __global__ void __launch_bounds__(SAMPLING_THREADS, 1) chain_verify_kernel(ChainVerifyParams p) {
    const uint32_t row = blockIdx.x;
    if (row >= p.rows) return;
    const size_t v = p.vocab;
    const uint32_t l = min(p.num_drafts[row], p.max_draft);
    const uint32_t *drafts = p.draft_tokens + static_cast<size_t>(row) * p.max_draft;
    const size_t t0 = p.target_row ? p.target_row[row] : static_cast<size_t>(row) * (p.max_draft + 1);
    const float *target = p.target + t0 * v;
    // q_i: its own row (draft_rows), one-hot at x_i (a NULL entry there), or the fixed layout.
    const auto q_row = [&](uint32_t i) -> const float * {
        if (p.draft_rows) return p.draft_rows[static_cast<size_t>(row) * p.max_draft + i];
        return p.draft + (static_cast<size_t>(row) * p.max_draft + i) * v;
    };
    const uint64_t seed = p.seed[row];
    const uint64_t offset = p.counter ? p.counter[row] : p.offset;
    const uint32_t word0 = p.counter ? 0u : row;
    __shared__ uint32_t s_acc;
    if (threadIdx.x == 0) {
        uint32_t i = 0;
        for (; i < l; ++i) {
            const uint32_t xi = drafts[i];
            const float u = accept_uniform(philox(seed, offset, word0, i));
            const float *q = q_row(i);
            const double px = xi < p.vocab ? pos(target[i * v + xi]) : 0.0;
            const double qx = xi < p.vocab ? (q ? pos(q[xi]) : 1.0) : 0.0;
            // u * q(x) < p(x) in f64: the product of two 24-bit significands is exact.
            if (!(qx > 0.0 && static_cast<double>(u) * qx < px)) break;
        }
        s_acc = i;
    }
    __syncthreads();
    const uint32_t j = s_acc;
    const uint64_t bits = draw_bits(philox(seed, offset, word0, j));
    uint32_t tok;
    if (j < l) {
        const float *pr = target + j * v, *qr = q_row(j);
        const uint32_t xj = drafts[j];
        if (qr) tok = block_pick([&](uint32_t i) { return fx(pos(pr[i]) - pos(qr[i])); }, p.vocab, bits);
        else tok = block_pick([&](uint32_t i) { return fx(pos(pr[i]) - (i == xj ? 1.f : 0.f)); }, p.vocab, bits);
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
    const size_t t0 = p.target_row ? p.target_row[row] : static_cast<size_t>(row) * (p.max_draft + 1);
    const float *target = p.target + t0 * v;
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
