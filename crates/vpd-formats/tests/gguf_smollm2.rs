//! The real asset: SmolLM2-135M-Instruct quantised to Q4_1 by llama.cpp.
//!
//! Tensor types found in the file: Q8_0 (token_embd, 1 tensor), Q4_1 (every attention and
//! MLP matrix, 210 tensors), F32 (norms, 61 tensors). No `output.weight` (tied embeddings)
//! and no `rope_freqs.weight`.
use std::path::PathBuf;
use std::time::Instant;

use vpd_formats::gguf::GgufFile;
use vpd_formats::{DType, WeightSource};

fn asset() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.exists(),
        "{} is missing: run `bash tools/fetch-assets.sh`",
        p.display()
    );
    p
}

#[test]
fn smollm2_config_and_every_tensor() {
    let f = GgufFile::open(&asset()).unwrap();
    assert_eq!(f.architecture(), Some("llama"));
    let c = f.llama_config().unwrap();
    assert_eq!(c.vocab_size, 49152);
    assert_eq!(c.hidden_size, 576);
    assert_eq!(c.intermediate_size, 1536);
    assert_eq!(c.num_hidden_layers, 30);
    assert_eq!(c.num_attention_heads, 9);
    assert_eq!(c.num_key_value_heads, 3);
    assert_eq!(c.head_dim, 64);
    assert_eq!(c.rope_theta, 100000.0);
    assert!(c.tie_word_embeddings);
    assert_eq!(c.max_position_embeddings, 8192);
    assert!(c.rope_scaling.is_none());
    assert_eq!(
        (c.bos_token_id, c.eos_token_ids.as_slice()),
        (Some(1), &[2][..])
    );
    assert!((c.rms_norm_eps - 1e-5).abs() < 1e-9);

    let tensors = f.tensors();
    assert_eq!(tensors.len(), 272);
    let q = f.info("model.layers.0.self_attn.q_proj.weight").unwrap();
    assert_eq!(
        (q.dtype, q.shape.as_slice()),
        (DType::Q4_1, &[576, 576][..])
    );
    let k = f.info("model.layers.29.self_attn.k_proj.weight").unwrap();
    assert_eq!(k.shape, [192, 576]);
    let e = f.info("model.embed_tokens.weight").unwrap();
    assert_eq!(
        (e.dtype, e.shape.as_slice()),
        (DType::Q8_0, &[49152, 576][..])
    );

    let t0 = Instant::now();
    let mut n = 0usize;
    for t in &tensors {
        let w = f.read_f32(&t.name).unwrap();
        assert_eq!(w.len(), t.numel(), "{}", t.name);
        assert!(
            w.iter().all(|x| x.is_finite()),
            "{} has non-finite values",
            t.name
        );
        n += w.len();
    }
    eprintln!("dequantised {n} weights in {:?}", t0.elapsed());
    assert!(n > 130_000_000);
}
