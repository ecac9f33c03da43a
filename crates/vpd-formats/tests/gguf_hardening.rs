//! Damaged and hostile GGUF files: each yields a specific `FormatError` naming the file and
//! the key or tensor at fault, never a panic.
mod gguf_common;

use gguf_common::*;
use vpd_formats::gguf::GgufValue as V;
use vpd_formats::FormatError as E;

/// Opens `bytes`, expects an error, and checks the message names the file.
fn open_err(bytes: &[u8]) -> (E, String) {
    let (r, path, _dir) = open_bytes(bytes);
    let e = r.err().expect("corrupt file opened");
    let msg = e.to_string();
    assert!(
        msg.contains(&*path.to_string_lossy()),
        "message does not name the file: {msg}"
    );
    (e, msg)
}

fn valid() -> (Gguf, Built) {
    let (g, _) = toy_llama(Q8_0);
    let b = g.build();
    (g, b)
}

fn patch(bytes: &mut [u8], at: usize, v: &[u8]) {
    bytes[at..at + v.len()].copy_from_slice(v);
}

fn assert_tensor(e: &E, name: &str, msg: &str, needle: &str) {
    assert!(
        matches!(e, E::Tensor { tensor, .. } if tensor == name),
        "{msg}"
    );
    assert!(msg.contains(needle), "`{needle}` not in: {msg}");
}

fn assert_field(e: &E, key: &str, msg: &str, needle: &str) {
    assert!(matches!(e, E::Field { field, .. } if field == key), "{msg}");
    assert!(msg.contains(needle), "`{needle}` not in: {msg}");
}

#[test]
fn wrong_magic() {
    let (_, mut b) = valid();
    b.bytes[0] = b'X';
    let (e, msg) = open_err(&b.bytes);
    assert!(
        matches!(e, E::BadMagic { .. }) && msg.contains("GGUF"),
        "{msg}"
    );
    assert!(matches!(open_err(b"GG").0, E::BadMagic { .. }));
}

#[test]
fn only_version_3() {
    for v in [1u32, 2, 4, u32::MAX] {
        let (_, mut b) = valid();
        patch(&mut b.bytes, 4, &v.to_le_bytes());
        let (e, msg) = open_err(&b.bytes);
        assert!(
            matches!(
                e,
                E::Unsupported {
                    what: "GGUF version",
                    ..
                }
            ) && msg.contains(&v.to_string()),
            "{msg}"
        );
    }
}

/// Cutting the file anywhere before its last byte is an error, whatever was being read.
#[test]
fn truncated_anywhere() {
    let (g, b) = valid();
    let n = b.bytes.len();
    let mut cuts: Vec<usize> = (0..b.data_start + 8).collect();
    cuts.extend((b.data_start..n).step_by(97));
    cuts.push(n - 1);
    for cut in cuts {
        let (r, _, _dir) = open_bytes(&b.bytes[..cut]);
        assert!(r.is_err(), "cut at {cut} of {n} opened");
    }
    // Spot checks that the message says what was cut.
    // (In the toy file the header's counts already fail to fit there; use a one-key file.)
    let mut one = Gguf::new();
    one.set("general.name", V::String("toy".into()));
    let one = one.build();
    let k = one.kv_at[0];
    let one = one.bytes;
    let (e, msg) = open_err(&one[..k + 14]);
    assert!(
        matches!(e, E::Corrupt { .. }) && msg.contains("metadata key #0"),
        "{msg}"
    );
    let (e, msg) = open_err(&one[..k + 8 + 12 + 4 + 8 + 2]);
    assert_field(&e, "general.name", &msg, "claims");
    let mut arr = Gguf::new();
    arr.set(
        "tokenizer.ggml.tokens",
        V::Array((0..9).map(|i| V::String(format!("t{i}"))).collect()),
    );
    let (e, msg) = open_err(&arr.build().bytes[..24 + 8 + 21 + 4 + 12 + 30]);
    assert_field(&e, "tokenizer.ggml.tokens", &msg, "array");
    let (e, msg) = open_err(&b.bytes[..b.info_at[3] + 12]);
    assert!(
        matches!(e, E::Corrupt { .. }) && msg.contains("tensor info #3"),
        "{msg}"
    );
    let (e, msg) = open_err(&b.bytes[..b.ndims_at[3] + 6]);
    assert_tensor(&e, &g.tensors[3].name, &msg, "dimension 0");
    let last = g.tensors.last().unwrap();
    let (e, msg) = open_err(&b.bytes[..n - 1]);
    assert_tensor(&e, &last.name, &msg, "past the end");
}

#[test]
fn absurd_counts() {
    for (at, v) in [
        (8, u64::MAX),
        (8, 1 << 21),
        (16, u64::MAX),
        (16, 1 << 40),
        (8, 100_000),
    ] {
        let (_, mut b) = valid();
        patch(&mut b.bytes, at, &v.to_le_bytes());
        let (e, msg) = open_err(&b.bytes);
        assert!(
            matches!(e, E::Corrupt { .. }) && msg.contains("cannot fit"),
            "{msg}"
        );
    }
}

#[test]
fn lengths_checked_before_allocating() {
    // Key length.
    let (_, mut b) = valid();
    patch(&mut b.bytes, b.kv_at[0], &u64::MAX.to_le_bytes());
    let (e, msg) = open_err(&b.bytes);
    assert!(
        matches!(e, E::Corrupt { .. }) && msg.contains("claims"),
        "{msg}"
    );
    // String value length.
    let mut g = Gguf::new();
    g.raw_kv("general.name", 8, (1u64 << 60).to_le_bytes().to_vec());
    let (e, msg) = open_err(&g.build().bytes);
    assert_field(&e, "general.name", &msg, "claims");
    // Array length, for elements of 1 byte and of strings.
    for elem in [0u32, 8] {
        let mut payload = elem.to_le_bytes().to_vec();
        payload.extend((1u64 << 50).to_le_bytes());
        let mut g = Gguf::new();
        g.raw_kv("tokenizer.ggml.tokens", 9, payload);
        let (e, msg) = open_err(&g.build().bytes);
        assert_field(&e, "tokenizer.ggml.tokens", &msg, "only");
    }
    // Tensor name length.
    let (_, mut b) = valid();
    patch(&mut b.bytes, b.info_at[0], &(1u64 << 40).to_le_bytes());
    let (e, msg) = open_err(&b.bytes);
    assert!(
        matches!(e, E::Corrupt { .. }) && msg.contains("tensor info #0"),
        "{msg}"
    );
}

#[test]
fn nested_arrays_bounded() {
    let mut v = V::Array(vec![V::U8(1)]);
    for _ in 0..7 {
        v = V::Array(vec![v]);
    }
    let mut g = Gguf::new();
    g.set("ok", v.clone()); // 8 levels: allowed
    assert!(open_bytes(&g.build().bytes).0.is_ok());
    g.set("deep", V::Array(vec![v]));
    let (e, msg) = open_err(&g.build().bytes);
    assert_field(&e, "deep", &msg, "nested");
}

#[test]
fn unknown_value_types_and_bad_values() {
    let mut g = Gguf::new();
    g.raw_kv("x.unknown", 13, vec![0; 8]);
    let (e, msg) = open_err(&g.build().bytes);
    assert_field(&e, "x.unknown", &msg, "unknown value type 13");
    let mut g = Gguf::new();
    g.raw_kv(
        "x.arr",
        9,
        [99u32.to_le_bytes().as_slice(), &1u64.to_le_bytes(), &[0; 8]].concat(),
    );
    let (e, msg) = open_err(&g.build().bytes);
    assert_field(&e, "x.arr", &msg, "element type 99");
    let mut g = Gguf::new();
    g.raw_kv("x.bool", 7, vec![2]);
    assert_field(&open_err(&g.build().bytes).0, "x.bool", "", "");
    let mut g = Gguf::new();
    g.raw_kv("x.utf8", 8, string(&[0xff, 0xfe]));
    let (e, msg) = open_err(&g.build().bytes);
    assert_field(&e, "x.utf8", &msg, "UTF-8");
}

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
