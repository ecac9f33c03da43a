//! Valid toy files in every supported type read back as the values written, under Hugging
//! Face names and shapes, with q/k rows un-permuted.
mod gguf_common;

use gguf_common::*;
use vpd_formats::gguf::GgufValue;
use vpd_formats::{DType, WeightSource};

/// Largest error allowed relative to the tensor's largest magnitude, per type.
fn tolerance(ty: u32) -> f32 {
    match ty {
        F32 => 0.0,
        F16 | BF16 => 8e-3,
        Q8_0 => 1e-2,
        // Q4_0's signed scale leaves 7 steps on one side: up to 1/8 of the range is clipped.
        Q4_0 => 0.13,
        _ => 0.1,
    }
}

fn round_trip(ty: u32, dtype: DType) {
    let (g, want) = toy_llama(ty);
    let (f, _, _dir) = open_bytes(&g.build().bytes);
    let f = f.unwrap();
    assert_eq!(f.tensors().len(), want.len());
    for (name, x) in &want {
        let info = f.info(name).unwrap_or_else(|| panic!("{name} missing"));
        if !name.contains("norm") {
            assert_eq!(info.dtype, dtype, "{name}");
        }
        assert_eq!(info.numel(), x.len());
        let got = f.read_f32(name).unwrap();
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let tol = if name.contains("norm") {
            0.0
        } else {
            tolerance(ty) * amax
        };
        let worst = got
            .iter()
            .zip(x)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= tol,
            "{name} as {dtype:?}: max error {worst} > {tol}"
        );
    }
}

#[test]
fn f32_round_trip_is_exact_including_qk_unpermute() {
    round_trip(F32, DType::F32);
}

#[test]
fn f16_and_bf16_round_trip() {
    round_trip(F16, DType::F16);
    round_trip(BF16, DType::BF16);
}

#[test]
fn q8_0_round_trip() {
    round_trip(Q8_0, DType::Q8_0);
}

#[test]
fn q4_0_and_q4_1_round_trip() {
    round_trip(Q4_0, DType::Q4_0);
    round_trip(Q4_1, DType::Q4_1);
}

#[test]
fn toy_config_shapes_and_metadata() {
    let (g, _) = toy_llama(Q4_1);
    let (f, path, _dir) = open_bytes(&g.build().bytes);
    let f = f.unwrap();
    assert_eq!(f.path(), path);
    assert_eq!(f.architecture(), Some("llama"));
    assert_eq!(
        f.get("general.name").and_then(GgufValue::as_str),
        Some("toy")
    );
    assert!(f.metadata().any(|(k, _)| k == "llama.block_count"));
    let c = f.llama_config().unwrap();
    assert_eq!(
        (c.vocab_size, c.hidden_size, c.intermediate_size),
        (VOCAB, HIDDEN, FFN)
    );
    assert_eq!(
        (c.num_attention_heads, c.num_key_value_heads, c.head_dim),
        (HEADS, KV_HEADS, HEAD_DIM)
    );
    assert_eq!(
        (c.num_hidden_layers, c.max_position_embeddings),
        (LAYERS, 256)
    );
    assert!(c.tie_word_embeddings);
    assert_eq!(
        (c.bos_token_id, c.eos_token_ids.clone()),
        (Some(1), vec![2])
    );
    let k = f.info("model.layers.1.self_attn.k_proj.weight").unwrap();
    assert_eq!(k.shape, [KV_HEADS * HEAD_DIM, HIDDEN]);
    let down = f.info("model.layers.0.mlp.down_proj.weight").unwrap();
    assert_eq!(down.shape, [HIDDEN, FFN]);
    assert!(
        f.info("blk.0.attn_q.weight").is_none(),
        "only HF names are exposed"
    );
}

#[test]
fn untied_head_and_defaults() {
    use GgufValue as V;
    let (mut g, _) = toy_llama(F32);
    let head: Vec<f32> = (0..VOCAB * HIDDEN).map(|i| i as f32).collect();
    g.tensor_f32("output.weight", &[VOCAB, HIDDEN], F32, &head);
    // Without vocab_size the tokens array gives it; without head_count_kv it equals head_count.
    g.kvs
        .retain(|kv| kv.key != b"llama.vocab_size" && kv.key != b"llama.rope.freq_base");
    g.set("llama.attention.head_count_kv", V::U32(HEADS as u32));
    let (f, _, _dir) = open_bytes(&g.build().bytes);
    let f = f.unwrap();
    assert_eq!(f.read_f32("lm_head.weight").unwrap(), head);
    // k_proj now has the wrong row count for HEADS kv heads: the shape check says so.
    let e = f.llama_config().unwrap_err().to_string();
    assert!(e.contains("blk.0.attn_k.weight"), "{e}");

    let (mut g, _) = toy_llama(F32);
    g.kvs
        .retain(|kv| kv.key != b"llama.vocab_size" && kv.key != b"llama.rope.freq_base");
    g.tensor_f32("output.weight", &[VOCAB, HIDDEN], F32, &head);
    let (f, _, _dir) = open_bytes(&g.build().bytes);
    let c = f.unwrap().llama_config().unwrap();
    assert_eq!(
        (c.vocab_size, c.rope_theta, c.tie_word_embeddings),
        (VOCAB, 10000.0, false)
    );
}

/// Divisors `rope_freqs.weight` would hold for llama3 scaling (factor 8, low 1, high 4).
fn llama3_divisors(
    theta: f32,
    old: usize,
) -> (vpd_formats::gguf::GgufFile, Vec<f32>, tempfile::TempDir) {
    use vpd_formats::{LlamaConfig, RopeScaling};
    let (mut g, _) = toy_llama(F32);
    g.set("llama.rope.freq_base", GgufValue::F32(theta));
    g.set(
        "llama.rope.scaling.original_context_length",
        GgufValue::U32(old as u32),
    );
    let (f0, _, _d) = open_bytes(&g.build().bytes);
    let base = f0.unwrap().llama_config().unwrap();
    let scaling = RopeScaling {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: old,
    };
    let scaled = LlamaConfig {
        rope_scaling: Some(scaling),
        ..base.clone()
    };
    let divisors: Vec<f32> = base
        .rope_inv_freq()
        .iter()
        .zip(scaled.rope_inv_freq())
        .map(|(b, s)| b / s)
        .collect();
    g.tensor_f32("rope_freqs.weight", &[HEAD_DIM / 2], F32, &divisors);
    let (f, _, dir) = open_bytes(&g.build().bytes);
    (f.unwrap(), scaled.rope_inv_freq(), dir)
}

/// llama3 scaling stored as `rope_freqs.weight` divisors is recovered, reproducing RoPE.
#[test]
fn llama3_rope_freqs_are_recovered() {
    // head_dim 16, theta 10000, window [1750, 7000]: wavelengths 1987 and 6283 are blended.
    let (f, want, _d) = llama3_divisors(10000.0, 7000);
    let c = f.llama_config().unwrap();
    let s = c.rope_scaling.clone().unwrap();
    assert!(
        (s.factor - 8.0).abs() < 1e-4 && (s.low_freq_factor - 1.0).abs() < 1e-2,
        "{s:?}"
    );
    assert!((s.high_freq_factor - 4.0).abs() < 1e-2, "{s:?}");
    for (a, b) in c.rope_inv_freq().iter().zip(&want) {
        assert!((a - b).abs() <= 1e-4 * b.abs(), "{a} vs {b}");
    }
    // theta 500000: only one blended frequency, too few to fit: Unsupported, never a guess.
    let (f, _, _d) = llama3_divisors(500000.0, 8192);
    let e = f.llama_config().unwrap_err();
    assert!(
        matches!(e, vpd_formats::FormatError::Unsupported { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("rope_freqs"), "{e}");
}
