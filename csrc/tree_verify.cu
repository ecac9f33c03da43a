// Tree speculative verification, one block per tree: all accept tests, residuals and the final
// draw of a token tree in one launch, accepted path and tokens written on the device.
//
// Algorithms: multi-step speculative sampling over i.i.d. children (Miao et al. 2024,
// "SpecInfer"), children drawn without replacement (Jeon et al. 2024, "Recursive Speculative
// Decoding"), and one-hot proposals for deterministic children (n-gram candidates); the proof
// of exactness is in crates/vpd-sampling/src/tree.rs. Random numbers: Philox4x32-10 as in
// sampling.cu, one counter per accept test and the next one for the final draw.
//
// A rejection replaces the owed distribution by norm(max(0, p - q)) over the whole vocabulary,
// so unlike the chain kernel this one must normalise exactly. It keeps integer masses with
// totals below 2^45, cross-multiplies in 128 bits and rescales residuals by a right shift:
// the arithmetic of vpd_sampling::kernel_ref::verify_tree_ref, which reproduces every token.
// Residual masses live in a per-row workspace, rewritten in place by the thread that owns each
// index.
#include "vpd_params.h"
#include "vpd_sampling.cuh"

typedef unsigned __int128 u128;
constexpr uint32_t MAX_TREE_NODES = 64;  // = kernel_ref::MAX_TREE_NODES
constexpr uint32_t TOTAL_BITS = 45;      // = kernel_ref::TOTAL_BITS

// Right shift that brings `t` below 2^TOTAL_BITS (kernel_ref::fit_shift).
static __device__ uint32_t fit_shift(u128 t) {
    const uint64_t hi = static_cast<uint64_t>(t >> 64), lo = static_cast<uint64_t>(t);
    const uint32_t bits = hi ? 128 - __clzll(hi) : 64 - __clzll(lo);
    return bits > TOTAL_BITS ? bits - TOTAL_BITS : 0;
}

// Block sum of per-thread partials whose total is below 2^96: the high parts (v >> 32) and the
// low 32 bits are summed separately in u64, which neither overflows.
static __device__ u128 block_sum_u128(u128 v) {
    const uint64_t hi = block_reduce_u64<false>(static_cast<uint64_t>(v >> 32));
    const uint64_t lo = block_reduce_u64<false>(static_cast<uint64_t>(v) & 0xffffffffull);
    return (static_cast<u128>(hi) << 32) + lo;
}

// A probability row as fixed-point masses, shifted so that their total fits.
struct Fitted {
    const float *x;
    uint32_t shift;
    __device__ uint64_t operator()(uint32_t i) const { return fx(pos(x[i])) >> shift; }
};

static __device__ Fitted fit_row(const float *x, uint32_t n, uint64_t &total) {
    u128 raw = 0;
    for (uint32_t i = threadIdx.x; i < n; i += SAMPLING_THREADS) raw += fx(pos(x[i]));
    const u128 all = block_sum_u128(raw);
    const Fitted f{x, fit_shift(all)};
    if (f.shift == 0) {
        total = static_cast<uint64_t>(all);
    } else {
        uint64_t s = 0;
        for (uint32_t i = threadIdx.x; i < n; i += SAMPLING_THREADS) s += f(i);
        total = block_reduce_u64<false>(s);
    }
    return f;
}

// The tree of `row` into shared memory; returns its node count.
static __device__ uint32_t load_tree(const TreeVerifyParams &p, uint32_t row, uint32_t *tok, int32_t *par) {
    const uint32_t n = min(p.num_nodes[row], min(p.max_nodes, MAX_TREE_NODES));
    for (uint32_t i = threadIdx.x; i < n; i += SAMPLING_THREADS) {
        tok[i] = p.tokens[static_cast<size_t>(row) * p.max_nodes + i];
        par[i] = p.parents[static_cast<size_t>(row) * p.max_nodes + i];
    }
    __syncthreads();
    return n;
}

// The first child of `node` after `from` (index order), or -1. Only later indices count, so a
// malformed parent list cannot make the descent loop.
static __device__ int32_t next_child(const int32_t *par, uint32_t n, int32_t node, int32_t from) {
    for (int32_t j = max(from, node) + 1; j < static_cast<int32_t>(n); ++j)
        if (par[j] == node) return j;
    return -1;
}

extern "C" __global__ void __launch_bounds__(SAMPLING_THREADS, 1) tree_verify_kernel(TreeVerifyParams p) {
    const uint32_t row = blockIdx.x;
    if (row >= p.rows) return;
    __shared__ uint32_t s_tok[MAX_TREE_NODES], s_removed[MAX_TREE_NODES];
    __shared__ int32_t s_par[MAX_TREE_NODES];
    const uint32_t n = load_tree(p, row, s_tok, s_par);
    const uint32_t v = p.vocab;
    const size_t stride = static_cast<size_t>(p.max_nodes) + 1;
    uint64_t *ws = p.workspace + static_cast<size_t>(row) * v;
    uint32_t *path = p.out_path + static_cast<size_t>(row) * p.max_nodes;
    uint32_t *out = p.out_tokens + static_cast<size_t>(row) * stride;
    const uint64_t seed = p.seed[row];
    uint32_t tries = 0, depth = 0;
    for (int32_t node = -1;;) {
        const size_t r = static_cast<size_t>(row) * stride + static_cast<size_t>(node + 1);
        const float *pr = p.target + r * v;
        const bool has_q = p.has_draft[r] != 0;
        uint64_t zp, zq = 0;
        const Fitted fp = fit_row(pr, v, zp);
        const Fitted fq = has_q ? fit_row(p.draft + r * v, v, zq) : Fitted{pr, 0};
        bool fresh = true;  // the owed masses are still fp's, not yet in the workspace
        uint32_t n_removed = 0;
        const auto P = [&](uint32_t i) -> uint64_t { return fresh ? fp(i) : ws[i]; };
        const auto Q = [&](uint32_t i) -> uint64_t {
            for (uint32_t k = 0; k < n_removed; ++k)
                if (s_removed[k] == i) return 0;
            return fq(i);
        };
        int32_t accepted = -1;
        for (int32_t c = next_child(s_par, n, node, node); c >= 0; c = next_child(s_par, n, node, c)) {
            const uint32_t t = s_tok[c];
            const u128 u = philox(seed, p.offset, row, tries++).x >> 8;
            const uint64_t pt = t < v ? P(t) : 0;
            const uint64_t qt = has_q && t < v ? Q(t) : 0;
            const bool ok = has_q ? qt > 0 && u * qt * zp < (static_cast<u128>(pt) * zq) << 24
                                  : u * zp < static_cast<u128>(pt) << 24;
            if (ok) {
                accepted = c;
                break;
            }
            if (!has_q || zq > 0) {  // p <- norm(max(0, p - q)); a q without mass takes nothing
                const auto R = [&](uint32_t i) -> u128 {
                    if (!has_q) return i == t ? 0 : P(i);
                    const u128 a = static_cast<u128>(P(i)) * zq, b = static_cast<u128>(Q(i)) * zp;
                    return a > b ? a - b : 0;
                };
                u128 part = 0;
                for (uint32_t i = threadIdx.x; i < v; i += SAMPLING_THREADS) part += R(i);
                // The reduction's barrier also orders every thread's read of P(t) above
                // before any workspace write below.
                const uint32_t s = fit_shift(block_sum_u128(part));
                uint64_t z = 0;
                for (uint32_t i = threadIdx.x; i < v; i += SAMPLING_THREADS) {
                    const uint64_t m = static_cast<uint64_t>(R(i) >> s);
                    ws[i] = m;
                    z += m;
                }
                fresh = false;
                zp = block_reduce_u64<false>(z);  // its barrier publishes the workspace
            }
            if (has_q && p.without_replacement && t < v) {
                zq -= qt;
                if (threadIdx.x == 0) s_removed[n_removed] = t;
                ++n_removed;
                __syncthreads();
            }
        }
        if (accepted >= 0) {
            if (threadIdx.x == 0) {
                path[depth] = accepted;
                out[depth] = s_tok[accepted];
            }
            ++depth;
            node = accepted;
            continue;
        }
        const uint64_t bits = draw_bits(philox(seed, p.offset, row, tries));
        uint32_t tok = block_pick(P, v, bits);
        if (tok == NONE) tok = block_argmax(pr, v);
        if (threadIdx.x == 0) {
            out[depth] = tok;
            p.accepted[row] = depth;
        }
        return;
    }
}

extern "C" __global__ void __launch_bounds__(SAMPLING_THREADS, 1) tree_verify_greedy_kernel(TreeVerifyParams p) {
    const uint32_t row = blockIdx.x;
    if (row >= p.rows) return;
    __shared__ uint32_t s_tok[MAX_TREE_NODES];
    __shared__ int32_t s_par[MAX_TREE_NODES];
    const uint32_t n = load_tree(p, row, s_tok, s_par);
    const size_t stride = static_cast<size_t>(p.max_nodes) + 1;
    uint32_t *path = p.out_path + static_cast<size_t>(row) * p.max_nodes;
    uint32_t *out = p.out_tokens + static_cast<size_t>(row) * stride;
    uint32_t depth = 0;
    for (int32_t node = -1;;) {
        const float *x = p.target + (static_cast<size_t>(row) * stride + static_cast<size_t>(node + 1)) * p.vocab;
        const uint32_t best = block_argmax(x, p.vocab);
        int32_t c = next_child(s_par, n, node, node);
        while (c >= 0 && s_tok[c] != best) c = next_child(s_par, n, node, c);
        if (c < 0) {
            if (threadIdx.x == 0) {
                out[depth] = best;
                p.accepted[row] = depth;
            }
            return;
        }
        if (threadIdx.x == 0) {
            path[depth] = c;
            out[depth] = best;
        }
        ++depth;
        node = c;
    }
}
