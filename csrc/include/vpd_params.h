/* Kernel parameter structs: declared once here, bound into Rust by bindgen (build.rs).
 * One struct per kernel family, passed by value. Every pointer is commented with its shape. */
#ifndef VPD_PARAMS_H
#define VPD_PARAMS_H

#include <stdint.h>

/* Fused residual add + RMSNorm (Zhang & Sennrich 2019), bf16 in and out, f32 math:
 *   residual += x (when x != NULL); out = residual / rms(residual) * weight. */
typedef struct RmsNormParams {
    const uint16_t *x;        /* [rows, dim] bf16, may be NULL (no residual add) */
    uint16_t *residual;       /* [rows, dim] bf16, updated in place */
    const uint16_t *weight;   /* [dim] bf16 */
    uint16_t *out;            /* [rows, dim] bf16 */
    uint32_t rows;
    uint32_t dim;
    float eps;
} RmsNormParams;

#endif
