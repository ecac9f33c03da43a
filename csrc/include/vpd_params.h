/* Kernel parameter structs: declared once here, bound into Rust by bindgen (build.rs).
 * One struct per kernel family, passed by value. Every pointer is commented with its shape.
 * Notation: T = new tokens in the step, S = sequences, H = hidden size, D = head_dim,
 * NH / NKV = query / key-value heads, KVD = NKV * D, SLOTS = num_blocks * block_size.
 * bf16 values travel as uint16_t (bit patterns); math is f32. */
#ifndef VPD_PARAMS_H
#define VPD_PARAMS_H

#include <stdint.h>

/* Token embedding gather (embedding.cu): out[t, :] = f32(table[ids[t], :]). */
typedef struct EmbeddingParams {
    const uint32_t *ids;      /* [T] token ids, < vocab (checked on the host) */
    const uint16_t *table;    /* [vocab, H] bf16 */
    float *out;               /* [T, H] f32 (the residual stream) */
    uint32_t tokens;
    uint32_t hidden;
} EmbeddingParams;

/* Fused residual add + RMSNorm (Zhang & Sennrich 2019) (rms_norm.cu):
 *   residual[r] += x[r] (when x != NULL);
 *   out[i] = bf16(residual[src(i)] / rms(residual[src(i)]) * weight), src(i) = rows_idx ? rows_idx[i] : i. */
typedef struct RmsNormParams {
    const float *x;           /* [rows, dim] f32, may be NULL (no residual add); needs rows_idx == NULL */
    float *residual;          /* [>= max source row + 1, dim] f32, updated in place when x != NULL */
    const uint16_t *weight;   /* [dim] bf16 */
    uint16_t *out;            /* [rows, dim] bf16 */
    const uint32_t *rows_idx; /* [rows] source row of each output row, may be NULL (identity) */
    uint32_t rows;
    uint32_t dim;
    float eps;
} RmsNormParams;

/* Rotate-half RoPE on q and k, fused with the paged K/V cache write (rope_kv.cu):
 *   q[t, h] and k[t, h] rotated in place by positions[t]·inv_freq; k and v then written as
 *   bf16 to cache slot slots[t]. inv_freq carries any llama3 scaling already. */
typedef struct RopeKvParams {
    float *qkv;               /* [T, qkv_stride] f32: q at column 0 (NH·D), k at q_cols, v at q_cols + KVD */
    const int32_t *positions; /* [T] RoPE position of each token */
    const uint32_t *slots;    /* [T] cache slot of each token (block_table[pos / bs] * bs + pos % bs) */
    const float *inv_freq;    /* [D / 2] */
    uint16_t *k_cache;        /* [SLOTS, KVD] bf16, this layer */
    uint16_t *v_cache;        /* [SLOTS, KVD] bf16, this layer */
    uint32_t tokens;
    uint32_t n_heads;
    uint32_t n_kv_heads;
    uint32_t head_dim;
    uint32_t qkv_stride;
} RopeKvParams;

/* SwiGLU (swiglu.cu): out[t, i] = bf16(silu(gu[t, i]) * gu[t, ff + i]). */
typedef struct SwigluParams {
    const float *gate_up;     /* [T, 2·ff] f32: gate then up */
    uint16_t *out;            /* [T, ff] bf16 */
    uint32_t tokens;
    uint32_t ff;
} SwigluParams;

/* Paged attention for decode, verification, chunked prefill and token trees (attention.cu).
 * Token t of sequence s = tok_seq[t], index i = t - seq_tok_start[s] among the new tokens, sees
 * cache positions 0..seq_start_pos[s] (the committed prefix) and the new tokens j it attends to:
 * j <= i for a chain, the ancestors of i (and i) through parents[] for a tree. New token j sits
 * at position seq_start_pos[s] + j. Softmax(q·kᵀ·scale)·v per query head, GQA (head h reads
 * kv head h / (NH / NKV)). Split-K: blockIdx.z of num_splits takes a contiguous share of the
 * visible positions and writes a partial (max, sum, acc) that attn_combine_kernel merges. */
typedef struct PagedAttnParams {
    const float *q;               /* [T, q_stride] f32, rotated; head h at column h·D */
    const uint16_t *k_cache;      /* [SLOTS, KVD] bf16, this layer */
    const uint16_t *v_cache;      /* [SLOTS, KVD] bf16, this layer */
    const uint32_t *tok_seq;      /* [T] sequence of each token */
    const uint32_t *seq_tok_start;/* [S + 1] first flattened token of each sequence */
    const uint32_t *seq_start_pos;/* [S] tokens already cached */
    const uint32_t *seq_is_tree;  /* [S] 0: causal chain, 1: tree through parents */
    const int32_t *parents;       /* [T] parent index among the sequence's new tokens, -1: prefix */
    const uint32_t *block_tables; /* [S, max_blocks] cache blocks, padded */
    uint16_t *out;                /* [T, NH·D] bf16 (num_splits == 1) */
    float *partial;               /* [num_splits, T, NH, D + 2] f32 (num_splits > 1): acc, max, sum */
    uint32_t tokens;
    uint32_t n_heads;
    uint32_t n_kv_heads;
    uint32_t head_dim;
    uint32_t q_stride;
    uint32_t block_size;
    uint32_t max_blocks;
    uint32_t num_splits;
    uint32_t max_tree;            /* max new tokens of a tree sequence (shared-memory ancestor list) */
    float scale;
} PagedAttnParams;

/* In-order K/V slot copies in every layer (kv_copy.cu): for each pair p in order,
 * cache[layer][dst[p]] = cache[layer][src[p]]. Copy-on-write blocks and tree compaction. */
typedef struct KvCopyParams {
    uint16_t *cache;          /* [2 · layers, SLOTS, KVD] bf16: K of layer l at 2l, V at 2l + 1 */
    const uint32_t *src;      /* [pairs] source slots */
    const uint32_t *dst;      /* [pairs] destination slots */
    uint32_t pairs;
    uint32_t kv_dim;
    uint64_t plane;           /* SLOTS · KVD: elements of one layer's K (or V) */
} KvCopyParams;

/* Random bf16 fill (init.cu): out[i] = bf16(offset + scale * u(seed, i)), u in [-1, 1). */
typedef struct FillRandomParams {
    uint16_t *out;            /* [n] bf16 */
    uint64_t n;
    uint64_t seed;
    float scale;
    float offset;
} FillRandomParams;

/* Fused sampling (sampling.cu, sample_kernel), one block per row: temperature, top-k, top-p,
 * softmax and an inverse-CDF draw with Philox4x32-10; greedy (temperature <= 0) is argmax.
 * Philox counter of row r: (seed[r], counter[r], stream, 0) when `counter` is set (the engine:
 * a request's own key and the position of the token the row decides, so a draw does not depend
 * on which rows share the launch), else (seed[r], offset, r, 0). With `probs`, the row's
 * processed distribution is written too: kept mass / total mass (f64 division rounded to f32),
 * one-hot at the argmax for greedy rows; a drafter's q for chain verification. Arithmetic:
 * vpd_sampling::kernel_ref (fixed-point masses), so the CPU reproduces every token and row. */
typedef struct SampleParams {
    const float *logits;      /* [rows, vocab] f32 */
    const float *temperature; /* [rows] <= 0 or NaN: greedy */
    const uint32_t *top_k;    /* [rows] 0 or >= vocab: off */
    const float *top_p;       /* [rows] >= 1 or NaN: off */
    const uint64_t *seed;     /* [rows] Philox key of each row */
    const uint64_t *counter;  /* [rows] Philox offset of each row, or NULL: `offset`, with r as word 0 */
    uint32_t *out;            /* [rows] sampled token */
    float *probs;             /* [rows, vocab] processed distribution of each row, or NULL */
    uint64_t offset;          /* Philox counter offset of this step when `counter` is NULL */
    uint32_t rows;
    uint32_t vocab;           /* 1 ..= 2^20 (checked on the host) */
    uint32_t stream;          /* Philox counter word 0 when `counter` is set (0 target, 1 drafter) */
} SampleParams;

/* Chain speculative verification (sampling.cu): chain r has L = min(num_drafts[r], max_draft)
 * drafts. chain_verify_kernel accepts draft i with probability min(1, p_i(x)/q_i(x)) (Philox
 * word 0 of (seed[r], offset, r, i), or of (seed[r], counter[r], 0, i) when `counter` is set),
 * draws the first rejection from norm(max(0, p_i - q_i)) and the bonus from p_L (words 2-3).
 * chain_verify_greedy_kernel reads logits in `target`, ignores `draft` and `seed`, and accepts
 * while x_i == argmax. A draft token >= vocab is rejected.
 * Layout: target rows of chain r start at row target_row[r] (or r * (max_draft + 1)); q_i of
 * chain r is the row at draft_rows[r * max_draft + i] (a NULL entry: one-hot at x_i, a
 * deterministic draft), or with draft_rows NULL row (r * max_draft + i) of `draft`. */
typedef struct ChainVerifyParams {
    const float *target;          /* [>= rows * (max_draft + 1) or the rows target_row names, vocab] processed target probs p (greedy: logits) */
    const float *draft;           /* [rows, max_draft, vocab] drafter probs q (greedy or draft_rows set: unused, may be NULL) */
    const float *const *draft_rows; /* [rows, max_draft] address of each q row (entries may be NULL), or NULL */
    const uint32_t *target_row;   /* [rows] first target row of each chain, or NULL */
    const uint32_t *draft_tokens; /* [rows, max_draft] */
    const uint32_t *num_drafts;   /* [rows] L of each row */
    const uint64_t *seed;         /* [rows] (greedy: unused, may be NULL) */
    const uint64_t *counter;      /* [rows] Philox offset of each chain, or NULL: `offset` with r as word 0 */
    uint32_t *accepted;           /* [rows] accepted drafts */
    uint32_t *out_tokens;         /* [rows, max_draft + 1]: accepted drafts, then the next token */
    uint64_t offset;
    uint32_t rows;
    uint32_t vocab;               /* 1 ..= 2^20 */
    uint32_t max_draft;           /* row stride, 0 ..= 16 */
} ChainVerifyParams;

/* Tree speculative verification (tree_verify.cu), one block per tree. Node i of row r has
 * token tokens[r][i] and parent parents[r][i] (-1: a child of the committed prefix); a node
 * whose parent is not in -1..i-1 is never reached. Position rows: 0 = after the prefix,
 * i + 1 = after node i. tree_verify_kernel tries each node's children in index order
 * (SpecInfer; without_replacement: Recursive Speculative Decoding), accept test and residual in
 * the integer form of vpd_sampling::kernel_ref::verify_tree_ref, Philox word 0 of
 * (seed[r], offset, r, try) per try and words 2-3 of the next counter for the final draw.
 * tree_verify_greedy_kernel reads logits in `target` and descends into the first child equal
 * to the argmax. A token >= vocab is never accepted. */
typedef struct TreeVerifyParams {
    const float *target;      /* [rows, max_nodes + 1, vocab] processed target probs p (greedy: logits) */
    const float *draft;       /* [rows, max_nodes + 1, vocab] q each position's children were drawn from (greedy: NULL) */
    const uint8_t *has_draft; /* [rows, max_nodes + 1] 0: deterministic children, one-hot q (greedy: NULL) */
    const uint32_t *tokens;   /* [rows, max_nodes] */
    const int32_t *parents;   /* [rows, max_nodes] */
    const uint32_t *num_nodes;/* [rows] nodes per tree, clamped to max_nodes */
    const uint64_t *seed;     /* [rows] (greedy: NULL) */
    uint64_t *workspace;      /* [rows, vocab] residual masses (greedy: NULL) */
    uint32_t *accepted;       /* [rows] accepted path length */
    uint32_t *out_path;       /* [rows, max_nodes] accepted nodes, root side first */
    uint32_t *out_tokens;     /* [rows, max_nodes + 1] their tokens, then the next token */
    uint64_t offset;
    uint32_t rows;
    uint32_t vocab;           /* 1 ..= 2^20 */
    uint32_t max_nodes;       /* row stride, 0 ..= 64 */
    uint32_t without_replacement;
} TreeVerifyParams;

/* Tensor-core paged attention (attention_mma.cu): m16n8k16 tiles of MMA_TILE query rows and
 * MMA_TILE cached positions. A paged_attn_mmaq block takes MMA_BLOCK_TOKENS chain tokens of
 * one sequence or more (MMA_TILE_WARPS(G) warps, each a query tile of MMA_TILE / G tokens),
 * so a verify forward with L < MMA_BLOCK_TOKENS reads each sequence's K/V once. The backend
 * sizes its grids and splits from the same numbers (backend/cuda/ops.rs). */
#define MMA_TILE 16
#define MMA_BLOCK_TOKENS 8

/* Matrix-vector products for decode-sized steps, T <= GEMV_MAX_T tokens (gemv.cu):
 *   acc[t, n] = sum_k in[t, k] * w[n, k]     (w [N, K] bf16 row-major, K % 8 == 0, f32 sums)
 * in = x (bf16), or, when x == NULL, the RMSNorm of the f32 residual fused in:
 *   in[t, k] = bf16(norm_w[k] * r[t, k] / rms(r[t])), exactly as rms_norm_kernel writes it.
 * Row pair w (ksplit warps share its K) is r0 = (w / half) * 2 * half + w % half and r1 = r0 + half, and
 * the epilogue (mode) writes it:
 *   GEMV_OUT_F32      y[t, n] = acc + beta * y[t, n]  (half 1; beta 1 is the residual add)
 *   GEMV_OUT_SWIGLU   act[t, i] = bf16(silu(acc[t, i]) * acc[t, F + i]), half = F = N / 2
 *   GEMV_OUT_ROPE_KV  half = D / 2 over the fused q|k|v rows: q and k pairs rotated as
 *                     rope_kv_kernel does and written to y, v written as is; k and v also to
 *                     their cache slot as bf16 (the fused QKV projection, RoPE and cache write). */
#define GEMV_MAX_T 4
#define GEMV_OUT_F32 0
#define GEMV_OUT_SWIGLU 1
#define GEMV_OUT_ROPE_KV 2
typedef struct GemvParams {
    const uint16_t *w;          /* [N, K] bf16 */
    const uint16_t *x;          /* [T, K] bf16, or NULL: the input is the normed residual */
    const float *residual;      /* [T, K] f32 (x == NULL) */
    const uint16_t *norm_w;     /* [K] bf16 (x == NULL) */
    float *y;                   /* [T, N] f32 (F32, ROPE_KV) */
    uint16_t *act;              /* [T, N / 2] bf16 (SWIGLU) */
    const int32_t *positions;   /* [T] RoPE positions (ROPE_KV) */
    const uint32_t *slots;      /* [T] cache slots (ROPE_KV) */
    const float *inv_freq;      /* [D / 2] (ROPE_KV) */
    uint16_t *k_cache;          /* [SLOTS, KVD] bf16, this layer (ROPE_KV) */
    uint16_t *v_cache;          /* [SLOTS, KVD] bf16, this layer (ROPE_KV) */
    uint32_t tokens;
    uint32_t n;
    uint32_t k;
    uint32_t mode;
    uint32_t half;
    uint32_t n_heads;           /* ROPE_KV: N = (n_heads + 2 * n_kv_heads) * head_dim */
    uint32_t n_kv_heads;
    uint32_t head_dim;
    uint32_t ksplit;            /* warps that share one row pair's K: 1, 2, 4 or 8 */
    float beta;
    float eps;
} GemvParams;

#endif
