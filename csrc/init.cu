// Device-side random initialisation of bf16 weights, for performance runs at 8B/1B shapes
// without a 16 GB file: out[i] = bf16(offset + scale · u(seed, i)), u uniform in [-1, 1)
// from a counter-based hash (SplitMix64's finaliser, Steele et al. 2014) of (seed, i), so the
// values do not depend on the launch shape.
#include "vpd_common.cuh"
#include "vpd_params.h"

static __device__ __forceinline__ uint64_t splitmix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

extern "C" __global__ void fill_random_bf16_kernel(FillRandomParams p) {
    const uint64_t stride = static_cast<uint64_t>(gridDim.x) * blockDim.x;
    for (uint64_t i = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < p.n; i += stride) {
        const uint64_t r = splitmix64(p.seed * 0x9e3779b97f4a7c15ull + i);
        const float u = static_cast<float>(r >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f;
        p.out[i] = f32_to_bf16(p.offset + p.scale * u);
    }
}
