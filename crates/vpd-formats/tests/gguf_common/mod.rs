//! A tiny GGUF v3 writer for tests: builds valid files (a 2-layer toy Llama) and records where
//! each field landed so tests can corrupt them precisely.
#![allow(dead_code)]
pub mod corrupt;

use std::collections::BTreeMap;
use std::path::PathBuf;

use half::{bf16, f16};
use vpd_formats::gguf::{permute_hf_to_gguf, GgufFile, GgufValue};

pub const F32: u32 = 0;
pub const F16: u32 = 1;
pub const Q4_0: u32 = 2;
pub const Q4_1: u32 = 3;
pub const Q8_0: u32 = 8;
pub const BF16: u32 = 30;

/// A key/value as raw bytes, so tests can write invalid types and payloads.
pub struct Kv {
    pub key: Vec<u8>,
    pub ty: u32,
    pub payload: Vec<u8>,
}

pub struct Tensor {
    pub name: String,
    /// GGUF order: fastest-varying first.
    pub dims: Vec<u64>,
    pub ty: u32,
    pub data: Vec<u8>,
}

pub struct Gguf {
    pub version: u32,
    pub kvs: Vec<Kv>,
    pub tensors: Vec<Tensor>,
}

/// The bytes, and the byte positions of interesting fields.
pub struct Built {
    pub bytes: Vec<u8>,
    /// Start of each key/value (its key length).
    pub kv_at: Vec<usize>,
    /// Start of each tensor info (its name length), and of its n_dims, type and offset fields.
    pub info_at: Vec<usize>,
    pub ndims_at: Vec<usize>,
    pub type_at: Vec<usize>,
    pub offset_at: Vec<usize>,
    pub data_start: usize,
    /// Absolute start of each tensor's data.
    pub data_at: Vec<usize>,
}

pub fn encode(v: &GgufValue) -> (u32, Vec<u8>) {
    use GgufValue as V;
    match v {
        V::U8(x) => (0, vec![*x]),
        V::I8(x) => (1, x.to_le_bytes().to_vec()),
        V::U16(x) => (2, x.to_le_bytes().to_vec()),
        V::I16(x) => (3, x.to_le_bytes().to_vec()),
        V::U32(x) => (4, x.to_le_bytes().to_vec()),
        V::I32(x) => (5, x.to_le_bytes().to_vec()),
        V::F32(x) => (6, x.to_le_bytes().to_vec()),
        V::Bool(x) => (7, vec![u8::from(*x)]),
        V::String(s) => (8, string(s.as_bytes())),
        V::Array(a) => {
            let elem = a.first().map_or(0, |e| encode(e).0);
            let mut out = elem.to_le_bytes().to_vec();
            out.extend((a.len() as u64).to_le_bytes());
            for e in a {
                out.extend(encode(e).1);
            }
            (9, out)
        }
        V::U64(x) => (10, x.to_le_bytes().to_vec()),
        V::I64(x) => (11, x.to_le_bytes().to_vec()),
        V::F64(x) => (12, x.to_le_bytes().to_vec()),
    }
}

pub fn string(s: &[u8]) -> Vec<u8> {
    let mut out = (s.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(s);
    out
}

impl Gguf {
    pub fn new() -> Self {
        Self {
            version: 3,
            kvs: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// Sets `key` (replacing an earlier value of the same key).
    pub fn set(&mut self, key: &str, v: GgufValue) -> &mut Self {
        let (ty, payload) = encode(&v);
        self.kvs.retain(|kv| kv.key != key.as_bytes());
        self.kvs.push(Kv {
            key: key.as_bytes().to_vec(),
            ty,
            payload,
        });
        self
    }

    pub fn raw_kv(&mut self, key: &str, ty: u32, payload: Vec<u8>) -> &mut Self {
        self.kvs.push(Kv {
            key: key.as_bytes().to_vec(),
            ty,
            payload,
        });
        self
    }

    pub fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, data: Vec<u8>) -> &mut Self {
        self.tensors.push(Tensor {
            name: name.into(),
            dims: dims.to_vec(),
            ty,
            data,
        });
        self
    }

    /// Adds a tensor from row-major values of Hugging Face `shape`, encoded as `ty`.
    pub fn tensor_f32(&mut self, name: &str, shape: &[usize], ty: u32, x: &[f32]) -> &mut Self {
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        self.tensor(name, &dims, ty, quantize(ty, x))
    }

    pub fn alignment(&self) -> usize {
        self.kvs
            .iter()
            .find(|kv| kv.key == b"general.alignment" && kv.ty == 4)
            .map_or(32, |kv| {
                u32::from_le_bytes(kv.payload[..4].try_into().unwrap()) as usize
            })
    }

    pub fn build(&self) -> Built {
        let align = self.alignment().max(1);
        let mut b = b"GGUF".to_vec();
        b.extend(self.version.to_le_bytes());
        b.extend((self.tensors.len() as u64).to_le_bytes());
        b.extend((self.kvs.len() as u64).to_le_bytes());
        let mut kv_at = Vec::new();
        for kv in &self.kvs {
            kv_at.push(b.len());
            b.extend(string(&kv.key));
            b.extend(kv.ty.to_le_bytes());
            b.extend(&kv.payload);
        }
        let (mut info_at, mut ndims_at, mut type_at, mut offset_at, mut rel) =
            (vec![], vec![], vec![], vec![], vec![]);
        let mut next = 0usize;
        for t in &self.tensors {
            info_at.push(b.len());
            b.extend(string(t.name.as_bytes()));
            ndims_at.push(b.len());
            b.extend((t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                b.extend(d.to_le_bytes());
            }
            type_at.push(b.len());
            b.extend(t.ty.to_le_bytes());
            offset_at.push(b.len());
            b.extend((next as u64).to_le_bytes());
            rel.push(next);
            next = (next + t.data.len()).next_multiple_of(align);
        }
        b.resize(b.len().next_multiple_of(align), 0);
        let data_start = b.len();
        let mut data_at = Vec::new();
        for (t, r) in self.tensors.iter().zip(rel) {
            b.resize(data_start + r, 0);
            data_at.push(b.len());
            b.extend(&t.data);
        }
        Built {
            bytes: b,
            kv_at,
            info_at,
            ndims_at,
            type_at,
            offset_at,
            data_start,
            data_at,
        }
    }
}

/// Encodes f32 values as ggml type `ty` (the reference quantisers, written from the format).
pub fn quantize(ty: u32, x: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    match ty {
        F32 => x.iter().for_each(|v| out.extend(v.to_le_bytes())),
        F16 => x
            .iter()
            .for_each(|v| out.extend(f16::from_f32(*v).to_le_bytes())),
        BF16 => x
            .iter()
            .for_each(|v| out.extend(bf16::from_f32(*v).to_le_bytes())),
        Q8_0 => {
            for blk in x.chunks(32) {
                let d = blk.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
                let inv = if d == 0.0 { 0.0 } else { 1.0 / d };
                out.extend(f16::from_f32(d).to_le_bytes());
                out.extend(blk.iter().map(|v| (v * inv).round() as i8 as u8));
            }
        }
        Q4_0 | Q4_1 => {
            for blk in x.chunks(32) {
                let (lo, hi) = blk
                    .iter()
                    .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                // Q4_0: signed scale from the value of largest magnitude, codes centred on 8.
                // Q4_1: scale and minimum spanning [lo, hi], codes 0..15.
                let (d, m) = if ty == Q4_0 {
                    let big = if lo.abs() > hi.abs() { lo } else { hi };
                    (big / -8.0, -8.0 * (big / -8.0))
                } else {
                    ((hi - lo) / 15.0, lo)
                };
                let inv = if d == 0.0 { 0.0 } else { 1.0 / d };
                let code = |v: f32| -> u8 {
                    let q = if ty == Q4_0 {
                        v * inv + 8.5
                    } else {
                        (v - m) * inv + 0.5
                    };
                    (q.max(0.0) as u8).min(15)
                };
                out.extend(f16::from_f32(d).to_le_bytes());
                if ty == Q4_1 {
                    out.extend(f16::from_f32(m).to_le_bytes());
                }
                for j in 0..16 {
                    out.push(code(blk[j]) | (code(blk[j + 16]) << 4));
                }
            }
        }
        _ => panic!("test writer cannot encode type {ty}"),
    }
    out
}

/// Toy Llama dimensions: every row is a whole number of 32-blocks.
pub const VOCAB: usize = 64;
pub const HIDDEN: usize = 64;
pub const HEADS: usize = 4;
pub const KV_HEADS: usize = 2;
pub const HEAD_DIM: usize = 16;
pub const FFN: usize = 96;
pub const LAYERS: usize = 2;

fn values(seed: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

/// A valid 2-layer toy Llama with matrices encoded as `ty` (norms always F32), and the Hugging
/// Face tensors it must read back as (before quantisation error).
pub fn toy_llama(ty: u32) -> (Gguf, BTreeMap<String, Vec<f32>>) {
    use GgufValue as V;
    let mut g = Gguf::new();
    g.set("general.architecture", V::String("llama".into()))
        .set("general.name", V::String("toy".into()))
        .set("llama.vocab_size", V::U32(VOCAB as u32))
        .set("llama.embedding_length", V::U32(HIDDEN as u32))
        .set("llama.feed_forward_length", V::U32(FFN as u32))
        .set("llama.block_count", V::U32(LAYERS as u32))
        .set("llama.attention.head_count", V::U32(HEADS as u32))
        .set("llama.attention.head_count_kv", V::U32(KV_HEADS as u32))
        .set("llama.attention.layer_norm_rms_epsilon", V::F32(1e-5))
        .set("llama.rope.freq_base", V::F32(10000.0))
        .set("llama.context_length", V::U32(256))
        .set("tokenizer.ggml.bos_token_id", V::U32(1))
        .set("tokenizer.ggml.eos_token_id", V::U32(2))
        .set(
            "tokenizer.ggml.tokens",
            V::Array((0..VOCAB).map(|i| V::String(format!("t{i}"))).collect()),
        );
    let mut hf = BTreeMap::new();
    let mut seed = 0;
    let mut add =
        |g: &mut Gguf, gguf: &str, hf_name: String, shape: &[usize], ty: u32, heads: usize| {
            seed += 1;
            let x = values(seed, shape.iter().product());
            let stored = if heads > 0 {
                permute_hf_to_gguf(&x, heads, shape[1]).unwrap()
            } else {
                x.clone()
            };
            g.tensor_f32(gguf, shape, ty, &stored);
            hf.insert(hf_name, x);
        };
    let (q, kv) = (HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM);
    add(
        &mut g,
        "token_embd.weight",
        "model.embed_tokens.weight".into(),
        &[VOCAB, HIDDEN],
        ty,
        0,
    );
    for l in 0..LAYERS {
        let p = |s: &str| format!("model.layers.{l}.{s}.weight");
        let b = |s: &str| format!("blk.{l}.{s}.weight");
        add(
            &mut g,
            &b("attn_norm"),
            p("input_layernorm"),
            &[HIDDEN],
            F32,
            0,
        );
        add(
            &mut g,
            &b("attn_q"),
            p("self_attn.q_proj"),
            &[q, HIDDEN],
            ty,
            HEADS,
        );
        add(
            &mut g,
            &b("attn_k"),
            p("self_attn.k_proj"),
            &[kv, HIDDEN],
            ty,
            KV_HEADS,
        );
        add(
            &mut g,
            &b("attn_v"),
            p("self_attn.v_proj"),
            &[kv, HIDDEN],
            ty,
            0,
        );
        add(
            &mut g,
            &b("attn_output"),
            p("self_attn.o_proj"),
            &[HIDDEN, q],
            ty,
            0,
        );
        add(
            &mut g,
            &b("ffn_norm"),
            p("post_attention_layernorm"),
            &[HIDDEN],
            F32,
            0,
        );
        add(
            &mut g,
            &b("ffn_gate"),
            p("mlp.gate_proj"),
            &[FFN, HIDDEN],
            ty,
            0,
        );
        add(
            &mut g,
            &b("ffn_up"),
            p("mlp.up_proj"),
            &[FFN, HIDDEN],
            ty,
            0,
        );
        add(
            &mut g,
            &b("ffn_down"),
            p("mlp.down_proj"),
            &[HIDDEN, FFN],
            ty,
            0,
        );
    }
    add(
        &mut g,
        "output_norm.weight",
        "model.norm.weight".into(),
        &[HIDDEN],
        F32,
        0,
    );
    (g, hf)
}

/// Writes `bytes` to a fresh temporary file and opens it. The directory lives as long as the
/// returned guard.
pub fn open_bytes(
    bytes: &[u8],
) -> (
    vpd_formats::error::Result<GgufFile>,
    PathBuf,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    std::fs::write(&path, bytes).unwrap();
    (GgufFile::open(&path), path, dir)
}
