// Helpers shared by every kernel file: bf16 bit patterns <-> f32, warp and block sums.
#pragma once
#include <cuda_bf16.h>
#include <stdint.h>

static __device__ __forceinline__ float bf16_to_f32(uint16_t v) {
    return __uint_as_float(static_cast<uint32_t>(v) << 16);
}

// Round to nearest even, as half::bf16::from_f32 does on the host.
static __device__ __forceinline__ uint16_t f32_to_bf16(float f) {
    __nv_bfloat16 b = __float2bfloat16_rn(f);
    return *reinterpret_cast<uint16_t *>(&b);
}

// The low and high bf16 of a 32-bit word, as f32; two f32 rounded to bf16 and packed the same way.
static __device__ __forceinline__ float bf16_lo(uint32_t w) { return bf16_to_f32(static_cast<uint16_t>(w & 0xffffu)); }
static __device__ __forceinline__ float bf16_hi(uint32_t w) { return bf16_to_f32(static_cast<uint16_t>(w >> 16)); }
static __device__ __forceinline__ uint32_t bf16x2_pack(float lo, float hi) {
    return static_cast<uint32_t>(f32_to_bf16(lo)) | (static_cast<uint32_t>(f32_to_bf16(hi)) << 16);
}

// Whether a device address is a multiple of `bytes` (a power of two), for the vector paths.
static __device__ __forceinline__ bool is_aligned(const void *ptr, uintptr_t bytes) {
    return (reinterpret_cast<uintptr_t>(ptr) & (bytes - 1)) == 0;
}

// Eight bf16 (one 16-byte load) to f32.
static __device__ __forceinline__ void bf16x8_to_f32(const uint4 v, float f[8]) {
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        f[2 * i] = __uint_as_float(w[i] << 16);
        f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
}

static __device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

static __device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
static __device__ __forceinline__ float block_sum(float v) {
    __shared__ float warp_sums[32];
    v = warp_sum(v);
    __syncthreads();  // warp_sums may still be read by a previous call
    if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = v;
    __syncthreads();
    float t = threadIdx.x < (blockDim.x >> 5) ? warp_sums[threadIdx.x] : 0.f;
    if (threadIdx.x < 32) {
        t = warp_sum(t);
        if (threadIdx.x == 0) warp_sums[0] = t;
    }
    __syncthreads();
    return warp_sums[0];
}
