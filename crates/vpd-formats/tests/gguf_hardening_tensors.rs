//! Damaged GGUF tensor infos and layouts, and Llama files whose tensors disagree with their
//! hyperparameters: each yields a specific `FormatError` naming the file and the tensor or key.
mod gguf_common;

use gguf_common::corrupt::*;
use gguf_common::*;
use vpd_formats::gguf::GgufValue as V;
use vpd_formats::FormatError as E;

#[test]
fn unknown_and_unsupported_tensor_types() {
    for (ty, needle) in [
        (99u32, "unknown ggml type id 99"),
        (14, "Q6_K"),
        (12, "Q4_K"),
        (7, "Q5_1"),
    ] {
        let (g, mut b) = valid();
        patch(&mut b.bytes, b.type_at[2], &ty.to_le_bytes());
        let (e, msg) = open_err(&b.bytes);
        assert_tensor(&e, &g.tensors[2].name, &msg, needle);
    }
}

#[test]
fn bad_dims() {
    for (n_dims, needle) in [(0u32, "n_dims is 0"), (5, "n_dims is 5")] {
        let (g, mut b) = valid();
        patch(&mut b.bytes, b.ndims_at[1], &n_dims.to_le_bytes());
        let (e, msg) = open_err(&b.bytes);
        assert_tensor(&e, &g.tensors[1].name, &msg, needle);
    }
    let mut g = Gguf::new();
    g.tensor("zero", &[32, 0], F32, vec![]);
    assert_tensor(
        &open_err(&g.build().bytes).0,
        "zero",
        "dimension 1 is 0",
        "",
    );
    let mut g = Gguf::new();
    g.tensor("huge", &[1 << 32, 1 << 32, 1 << 32], F32, vec![]);
    let (e, msg) = open_err(&g.build().bytes);
    assert_tensor(&e, "huge", &msg, "overflows");
    let mut g = Gguf::new();
    g.tensor("ragged", &[48, 2], Q8_0, vec![0; 34 * 3]);
    let (e, msg) = open_err(&g.build().bytes);
    assert_tensor(&e, "ragged", &msg, "block size 32");
}

#[test]
fn alignment_and_placement() {
    // Offset not a multiple of the alignment.
    let (g, mut b) = valid();
    let off = u64::from_le_bytes(b.bytes[b.offset_at[4]..][..8].try_into().unwrap());
    patch(&mut b.bytes, b.offset_at[4], &(off + 4).to_le_bytes());
    let (e, msg) = open_err(&b.bytes);
    assert_tensor(&e, &g.tensors[4].name, &msg, "not aligned");
    // Bad general.alignment values.
    for a in [0u32, 3, 48] {
        let (mut g, _) = toy_llama(F32);
        g.set("general.alignment", V::U32(a));
        g.kvs.retain(|kv| kv.key != b"general.alignment");
        g.raw_kv("general.alignment", 4, a.to_le_bytes().to_vec());
        let (e, msg) = open_err(
            &Gguf {
                version: 3,
                kvs: g.kvs,
                tensors: vec![],
            }
            .build()
            .bytes,
        );
        assert_field(&e, "general.alignment", &msg, "power of two");
    }
    // A different valid alignment round-trips.
    let (mut g, want) = toy_llama(Q4_1);
    g.set("general.alignment", V::U32(64));
    let (f, _, _d) = open_bytes(&g.build().bytes);
    let f = f.unwrap();
    assert_eq!(f.data_layout().0, 64);
    assert_eq!(f.gguf_tensors().len(), want.len());
    // Data past the end of the file.
    let (g, mut b) = valid();
    patch(&mut b.bytes, b.offset_at[5], &(1u64 << 40).to_le_bytes());
    let (e, msg) = open_err(&b.bytes);
    assert_tensor(&e, &g.tensors[5].name, &msg, "past the end");
    patch(&mut b.bytes, b.offset_at[5], &(u64::MAX - 31).to_le_bytes());
    assert_tensor(&open_err(&b.bytes).0, &g.tensors[5].name, "", "");
    // Overlap: tensor 6 pointed at tensor 5's data.
    let (g, mut b) = valid();
    let off5 = b.bytes[b.offset_at[5]..][..8].to_vec();
    patch(&mut b.bytes, b.offset_at[6], &off5);
    let (e, msg) = open_err(&b.bytes);
    assert!(
        matches!(e, E::Tensor { .. }) && msg.contains("overlaps"),
        "{msg}"
    );
    assert!(
        msg.contains(&g.tensors[5].name) && msg.contains(&g.tensors[6].name),
        "{msg}"
    );
}

#[test]
fn duplicates() {
    let mut g = Gguf::new();
    g.raw_kv("a.b", 4, vec![1, 0, 0, 0])
        .raw_kv("a.b", 4, vec![2, 0, 0, 0]);
    let (e, msg) = open_err(&g.build().bytes);
    assert_field(&e, "a.b", &msg, "duplicate key");
    let mut g = Gguf::new();
    g.tensor("t", &[4], F32, vec![0; 16])
        .tensor("t", &[4], F32, vec![0; 16]);
    let (e, msg) = open_err(&g.build().bytes);
    assert_tensor(&e, "t", &msg, "duplicate tensor name");
    // Two names that map to the same Hugging Face name.
    let mut g = Gguf::new();
    g.tensor("output_norm.weight", &[4], F32, vec![0; 16])
        .tensor("model.norm.weight", &[4], F32, vec![0; 16]);
    let (e, msg) = open_err(&g.build().bytes);
    assert!(
        matches!(e, E::Tensor { .. }) && msg.contains("model.norm.weight"),
        "{msg}"
    );
}

/// `llama_config` rejects tensors whose shapes disagree with the hyperparameters.
#[test]
fn shapes_checked_against_hyperparameters() {
    let cases: [(&str, &[usize], &str); 7] = [
        ("token_embd.weight", &[VOCAB + 32, HIDDEN], "vocab_size"),
        (
            "blk.0.attn_q.weight",
            &[HIDDEN / 2, HIDDEN],
            "heads·head_dim",
        ),
        ("blk.1.attn_k.weight", &[HIDDEN, HIDDEN], "kv_heads"),
        ("blk.1.attn_v.weight", &[48, HIDDEN], "kv_heads"),
        (
            "blk.0.ffn_up.weight",
            &[FFN + 32, HIDDEN],
            "feed_forward_length",
        ),
        (
            "blk.1.ffn_down.weight",
            &[HIDDEN, FFN + 32],
            "feed_forward_length",
        ),
        ("output_norm.weight", &[HIDDEN + 1], "hidden_size"),
    ];
    for (name, shape, needle) in cases {
        let (mut g, _) = toy_llama(F32);
        let t = g.tensors.iter_mut().find(|t| t.name == name).unwrap();
        t.dims = shape.iter().rev().map(|&d| d as u64).collect();
        t.data = vec![0; 4 * shape.iter().product::<usize>()];
        let (f, _, _d) = open_bytes(&g.build().bytes);
        let e = f.unwrap().llama_config().unwrap_err();
        assert_tensor(&e, name, &e.to_string(), needle);
    }
    // A missing layer tensor and a layer beyond block_count.
    let (mut g, _) = toy_llama(F32);
    g.tensors.retain(|t| t.name != "blk.1.ffn_gate.weight");
    let e = open_bytes(&g.build().bytes)
        .0
        .unwrap()
        .llama_config()
        .unwrap_err();
    assert_tensor(&e, "blk.1.ffn_gate.weight", &e.to_string(), "missing");
    let (mut g, _) = toy_llama(F32);
    g.tensor_f32("blk.2.attn_norm.weight", &[HIDDEN], F32, &[0.0; HIDDEN]);
    let e = open_bytes(&g.build().bytes)
        .0
        .unwrap()
        .llama_config()
        .unwrap_err();
    assert_tensor(&e, "blk.2.attn_norm.weight", &e.to_string(), "beyond");
}

#[test]
fn hyperparameter_errors() {
    let (mut g, _) = toy_llama(F32);
    g.set("general.architecture", V::String("qwen2".into()));
    let e = open_bytes(&g.build().bytes)
        .0
        .unwrap()
        .llama_config()
        .unwrap_err();
    assert!(
        matches!(
            e,
            E::Unsupported {
                what: "architecture",
                ..
            }
        ) && e.to_string().contains("qwen2"),
        "{e}"
    );
    let (mut g, _) = toy_llama(F32);
    g.kvs.retain(|kv| kv.key != b"llama.block_count");
    let e = open_bytes(&g.build().bytes)
        .0
        .unwrap()
        .llama_config()
        .unwrap_err();
    assert_field(&e, "llama.block_count", &e.to_string(), "missing");
    let (mut g, _) = toy_llama(F32);
    g.set("llama.embedding_length", V::String("576".into()));
    let e = open_bytes(&g.build().bytes)
        .0
        .unwrap()
        .llama_config()
        .unwrap_err();
    assert_field(
        &e,
        "llama.embedding_length",
        &e.to_string(),
        "unsigned integer",
    );
    let (mut g, _) = toy_llama(F32);
    g.set("tokenizer.ggml.eos_token_id", V::U32(VOCAB as u32));
    let e = open_bytes(&g.build().bytes)
        .0
        .unwrap()
        .llama_config()
        .unwrap_err();
    assert_field(&e, "eos_token_id", &e.to_string(), "outside the vocabulary");
    let (mut g, _) = toy_llama(F32);
    g.set("llama.attention.head_count_kv", V::U32(3));
    let e = open_bytes(&g.build().bytes)
        .0
        .unwrap()
        .llama_config()
        .unwrap_err();
    assert!(
        matches!(e, E::Field { .. }) && e.to_string().contains("num_key_value_heads"),
        "{e}"
    );
    let (mut g, _) = toy_llama(F32);
    g.set("llama.rope.scaling.type", V::String("yarn".into()));
    let e = open_bytes(&g.build().bytes)
        .0
        .unwrap()
        .llama_config()
        .unwrap_err();
    assert!(
        matches!(e, E::Unsupported { .. }) && e.to_string().contains("yarn"),
        "{e}"
    );
    let (mut g, _) = toy_llama(F32);
    g.set("llama.rope.scaling.type", V::String("llama3".into()));
    let e = open_bytes(&g.build().bytes)
        .0
        .unwrap()
        .llama_config()
        .unwrap_err();
    assert!(
        matches!(e, E::Unsupported { .. }) && e.to_string().contains("rope_freqs"),
        "{e}"
    );
}

#[test]
fn unknown_tensor_name_errors() {
    let (g, _) = toy_llama(F32);
    let f = open_bytes(&g.build().bytes).0.unwrap();
    use vpd_formats::WeightSource;
    let e = f.read_f32("model.layers.9.mlp.up_proj.weight").unwrap_err();
    assert!(
        matches!(e, E::Tensor { .. }) && e.to_string().contains("no such tensor"),
        "{e}"
    );
}
