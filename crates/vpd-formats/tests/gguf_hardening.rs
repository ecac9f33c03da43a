//! Damaged and hostile GGUF headers and metadata: each yields a specific `FormatError`
//! naming the file and the key at fault, never a panic.
mod gguf_common;

use gguf_common::corrupt::*;
use gguf_common::*;
use vpd_formats::gguf::GgufValue as V;
use vpd_formats::FormatError as E;

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
