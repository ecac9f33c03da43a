// Matrix-vector products for decode-sized steps (T <= GEMV_MAX_T tokens), with the work that
// surrounds each projection of a Llama layer fused in, so a decode layer is five launches
// (qkv, attention, o, gate|up, down) instead of ten:
// - prologue: the RMSNorm of the f32 residual (Zhang & Sennrich 2019), recomputed by every
//   block from the residual row (16 KiB at hidden 4096, read from L2) instead of a kernel of
//   its own that wrote a bf16 copy;
// - epilogues: the residual add (beta = 1), SwiGLU (Shazeer 2020) over a gate row and its up
//   row, or rotate-half RoPE (Su et al. 2021) with the paged K/V cache write (Kwon et al. 2023).
// At batch 1 the step is a stream of weight reads (shared ALGORITHMS.md, "Bandwidth floor"):
// each warp streams two weight rows (or its share of their K) with 16-byte loads, GEMV_UNROLL
// of them in flight per row and lane (evict-first: weights are read once per step), and the
// blocks loop over the rows so that the prologue is paid once per block, not once per pair.
// The math matches rms_norm_kernel, swiglu_kernel and rope_kv_kernel (the cuBLAS path) except
// for the order of the f32 sums.
#include "vpd_common.cuh"
#include "vpd_params.h"

#define GEMV_WARPS 8
// 16-byte loads in flight per row and lane. 8 for one token (about 120 registers, 2 blocks a
// SM) measured 4–16% slower than 4 on the H200 (docs/perf.md, run O).
#define GEMV_UNROLL 4

template <int T>
static __device__ __forceinline__ void gemv_epilogue(const GemvParams &p, uint32_t r0, uint32_t r1, bool has1,
                                                     const float (&a)[T], const float (&b)[T]) {
#pragma unroll
    for (int t = 0; t < T; ++t) {
        if (p.mode == GEMV_OUT_SWIGLU) {
            const float g = a[t], u = b[t];
            p.act[static_cast<size_t>(t) * p.half + r0] = f32_to_bf16(g / (1.f + expf(-g)) * u);
        } else if (p.mode == GEMV_OUT_ROPE_KV) {
            const uint32_t D = p.head_dim, hd = D / 2, head = r0 / D, i = r0 % D;
            const uint32_t kvd = p.n_kv_heads * D;
            const size_t slot = p.slots[t];
            float *row = p.y + static_cast<size_t>(t) * p.n;
            if (head < p.n_heads + p.n_kv_heads) {
                float sn, cs;
                sincosf(static_cast<float>(p.positions[t]) * p.inv_freq[i], &sn, &cs);
                const float x1 = a[t], x2 = b[t];
                const float ra = x1 * cs - x2 * sn, rb = x2 * cs + x1 * sn;
                row[r0] = ra;
                row[r1] = rb;
                if (head >= p.n_heads) {
                    uint16_t *kc = p.k_cache + slot * kvd + (head - p.n_heads) * D;
                    kc[i] = f32_to_bf16(ra);
                    kc[i + hd] = f32_to_bf16(rb);
                }
            } else {
                row[r0] = a[t];
                row[r1] = b[t];
                uint16_t *vc = p.v_cache + slot * kvd + (head - p.n_heads - p.n_kv_heads) * D;
                vc[i] = f32_to_bf16(a[t]);
                vc[i + hd] = f32_to_bf16(b[t]);
            }
        } else {
            float *y = p.y + static_cast<size_t>(t) * p.n;
            y[r0] = p.beta != 0.f ? a[t] + p.beta * y[r0] : a[t];
            if (has1) y[r1] = p.beta != 0.f ? b[t] + p.beta * y[r1] : b[t];
        }
    }
}

template <int T, bool NORM>
static __device__ __forceinline__ void gemv(const GemvParams &p) {
    constexpr int U = GEMV_UNROLL;
    const uint32_t lane = threadIdx.x & 31;
    const uint32_t chunks = p.k / 8;  // 16-byte chunks of a weight row
    float inv[T];
#pragma unroll
    for (int t = 0; t < T; ++t) inv[t] = 0.f;
    if (NORM) {
#pragma unroll
        for (int t = 0; t < T; ++t) {
            const float4 *r = reinterpret_cast<const float4 *>(p.residual + static_cast<size_t>(t) * p.k);
            float ss = 0.f;
            // Unrolled: the loads of a thread's share are in flight together (one latency, not
            // k / 1024 of them, before the first weight load).
#pragma unroll 4
            for (uint32_t i = threadIdx.x; i < p.k / 4; i += blockDim.x) {
                const float4 v = r[i];
                ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
            }
            inv[t] = rsqrtf(block_sum(ss) / p.k + p.eps);
        }
    }
    // A block is GEMV_WARPS / ksplit row pairs, each summed by ksplit warps over interleaved
    // shares of K: rows few enough to leave SMs idle (o, down and every 1B projection) are
    // split, so that enough loads are in flight (gemv.rs picks ksplit).
    const uint32_t S = p.ksplit, wi = threadIdx.x >> 5, ks = wi % S, per_block = GEMV_WARPS / S;
    __shared__ float part[GEMV_WARPS][2 * T];
    const uint32_t pairs = p.mode == GEMV_OUT_F32 ? (p.n + 1) / 2 : p.n / 2;
    const uint32_t groups = (pairs + per_block - 1) / per_block;
    for (uint32_t gi = blockIdx.x; gi < groups; gi += gridDim.x) {
        const uint32_t w = gi * per_block + wi / S;
        const bool live = w < pairs;
        const uint32_t r0 = live ? (w / p.half) * 2 * p.half + w % p.half : 0, r1 = r0 + p.half;
        const bool has1 = live && r1 < p.n;
        const uint4 *w0 = reinterpret_cast<const uint4 *>(p.w + static_cast<size_t>(r0) * p.k);
        const uint4 *w1 = reinterpret_cast<const uint4 *>(p.w + static_cast<size_t>(has1 ? r1 : r0) * p.k);
        float a[T], b[T];
#pragma unroll
        for (int t = 0; t < T; ++t) a[t] = b[t] = 0.f;
        const uint32_t end = live ? chunks : 0, step = 32 * S;
        for (uint32_t c0 = ks * 32 + lane; c0 < end; c0 += step * U) {
            uint4 wa[U], wb[U];
#pragma unroll
            for (int u = 0; u < U; ++u) {
                const uint32_t c = c0 + step * u;
                wa[u] = wb[u] = make_uint4(0, 0, 0, 0);
                if (c < end) {
                    wa[u] = __ldcs(w0 + c);
                    wb[u] = __ldcs(w1 + c);
                }
            }
#pragma unroll
            for (int u = 0; u < U; ++u) {
                const uint32_t c = c0 + step * u;
                if (c >= end) continue;
                float fa[8], fb[8], g[8];
                bf16x8_to_f32(wa[u], fa);
                bf16x8_to_f32(wb[u], fb);
                if (NORM) bf16x8_to_f32(__ldg(reinterpret_cast<const uint4 *>(p.norm_w) + c), g);
#pragma unroll
                for (int t = 0; t < T; ++t) {
                    float xv[8];
                    if (NORM) {
                        const float4 *r = reinterpret_cast<const float4 *>(p.residual + static_cast<size_t>(t) * p.k) + 2 * c;
                        const float4 lo = __ldg(r), hi = __ldg(r + 1);
                        const float rv[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
#pragma unroll
                        for (int e = 0; e < 8; ++e) xv[e] = bf16_to_f32(f32_to_bf16(g[e] * (rv[e] * inv[t])));
                    } else {
                        bf16x8_to_f32(__ldg(reinterpret_cast<const uint4 *>(p.x + static_cast<size_t>(t) * p.k) + c), xv);
                    }
#pragma unroll
                    for (int e = 0; e < 8; ++e) {
                        a[t] += fa[e] * xv[e];
                        b[t] += fb[e] * xv[e];
                    }
                }
            }
        }
#pragma unroll
        for (int t = 0; t < T; ++t) {
            a[t] = warp_sum(a[t]);
            b[t] = warp_sum(b[t]);
        }
        if (S == 1) {
            if (live && lane == 0) gemv_epilogue<T>(p, r0, r1, has1, a, b);
            continue;
        }
        if (lane == 0) {
#pragma unroll
            for (int t = 0; t < T; ++t) {
                part[wi][t] = a[t];
                part[wi][T + t] = b[t];
            }
        }
        __syncthreads();
        if (live && ks == 0 && lane == 0) {
#pragma unroll
            for (int t = 0; t < T; ++t) {
                for (uint32_t j = 1; j < S; ++j) {
                    a[t] += part[wi + j][t];
                    b[t] += part[wi + j][T + t];
                }
            }
            gemv_epilogue<T>(p, r0, r1, has1, a, b);
        }
        __syncthreads();
    }
}

#define GEMV_KERNEL(T, NORM, NAME)                                                                  \
    extern "C" __global__ void __launch_bounds__(GEMV_WARPS * 32) NAME(GemvParams p) { gemv<T, NORM>(p); }
GEMV_KERNEL(1, false, gemv1_kernel)
GEMV_KERNEL(2, false, gemv2_kernel)
GEMV_KERNEL(3, false, gemv3_kernel)
GEMV_KERNEL(4, false, gemv4_kernel)
GEMV_KERNEL(1, true, gemv_norm1_kernel)
GEMV_KERNEL(2, true, gemv_norm2_kernel)
GEMV_KERNEL(3, true, gemv_norm3_kernel)
GEMV_KERNEL(4, true, gemv_norm4_kernel)
