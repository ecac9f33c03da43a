//! GGUF v3 reader: llama.cpp's single-file model format, memory-mapped and validated up front.
//!
//! Layout per the GGUF specification (ggml's `docs/gguf.md`): magic `GGUF`, `u32` version,
//! `u64` tensor and key/value counts, the key/values (`u64`-length UTF-8 key, `u32` type,
//! value), the tensor infos (name, `u32` n_dims, `u64` dims fastest-first, `u32` ggml type,
//! `u64` offset), padding to `general.alignment`, then the tensor data. All little-endian.
//!
//! Hardened against hostile or damaged files, each case a specific [`FormatError`] naming the
//! file and the key or tensor, never a panic: wrong magic, version other than 3, truncation
//! anywhere, counts/lengths larger than the bytes left (checked before allocating), arrays
//! nested too deep, unknown value or tensor types, unsupported ggml types, bad n_dims, zero
//! or overflowing dims, rows that are not whole quant blocks, misaligned or out-of-file or
//! overlapping tensor data, duplicate keys or tensor names, and (in
//! [`GgufFile::llama_config`]) shapes that disagree with the hyperparameters.
//!
//! Tensors are exposed through [`WeightSource`] under Hugging Face names with row-major
//! shapes (GGUF dims reversed); q/k rows are un-permuted back to rotate-half RoPE order.
// `n % k` stays: `is_multiple_of` is newer than the workspace's rust-version (1.85).
#![allow(clippy::manual_is_multiple_of)]

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::error::{FormatError, Result};
use crate::mmap::MappedFile;
use crate::source::{TensorInfo, WeightSource};

mod dequant;
mod layout;
mod llama;
mod llama_checks;
mod parse;

pub use dequant::{block_layout, dequantize, ggml_type, ggml_type_name};
pub use layout::GgufTensor;
pub use llama::{hf_tensor_name, permute_gguf_to_hf, permute_hf_to_gguf};

/// A mapped, fully validated GGUF v3 file.
#[derive(Debug)]
pub struct GgufFile {
    map: MappedFile,
    metadata: BTreeMap<String, GgufValue>,
    /// In file order.
    tensors: Vec<GgufTensor>,
    /// Hugging Face name → index into `tensors`.
    by_hf: HashMap<String, usize>,
    /// GGUF name → index into `tensors`.
    by_gguf: HashMap<String, usize>,
    alignment: u64,
    data_start: usize,
}

impl GgufFile {
    /// Maps `path` and parses and validates its header, metadata and tensor layout.
    ///
    /// # Errors
    /// I/O failure, or any of the malformations listed in the module docs.
    pub fn open(path: &Path) -> Result<GgufFile> {
        let map = MappedFile::open(path)?;
        let parsed = parse::parse(map.bytes(), path, hf_tensor_name)?;
        let index = |f: fn(&GgufTensor) -> &String| {
            parsed
                .tensors
                .iter()
                .enumerate()
                .map(|(i, t)| (f(t).clone(), i))
                .collect::<HashMap<_, _>>()
        };
        let by_hf = index(|t| &t.hf_name);
        let by_gguf = index(|t| &t.name);
        Ok(GgufFile {
            map,
            metadata: parsed.metadata,
            tensors: parsed.tensors,
            by_hf,
            by_gguf,
            alignment: parsed.alignment,
            data_start: parsed.data_start,
        })
    }

    pub fn path(&self) -> &Path {
        self.map.path()
    }

    /// One metadata value by key.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// Every metadata key/value, sorted by key.
    pub fn metadata(&self) -> impl Iterator<Item = (&str, &GgufValue)> {
        self.metadata.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// `general.architecture`, if present and a string.
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(GgufValue::as_str)
    }

    /// The tensors as stored (GGUF names and dims), in file order.
    pub fn gguf_tensors(&self) -> &[GgufTensor] {
        &self.tensors
    }

    /// A tensor by its GGUF name (`blk.0.attn_q.weight`).
    pub fn info_gguf(&self, gguf_name: &str) -> Option<&GgufTensor> {
        self.by_gguf.get(gguf_name).map(|&i| &self.tensors[i])
    }

    /// The raw stored bytes of a tensor (by Hugging Face name), e.g. for quantised kernels.
    /// Note that q/k rows are still in GGUF's permuted order here.
    pub fn raw_bytes(&self, name: &str) -> Option<&[u8]> {
        let t = &self.tensors[*self.by_hf.get(name)?];
        self.map.bytes().get(t.start..t.end)
    }

    /// `general.alignment` (default 32) and the absolute offset of the data section.
    pub fn data_layout(&self) -> (u64, usize) {
        (self.alignment, self.data_start)
    }
}

impl WeightSource for GgufFile {
    fn tensors(&self) -> Vec<TensorInfo> {
        self.tensors.iter().map(info).collect()
    }

    fn info(&self, name: &str) -> Option<TensorInfo> {
        self.by_hf.get(name).map(|&i| info(&self.tensors[i]))
    }

    fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        let path = || self.path().to_path_buf();
        let t = self
            .by_hf
            .get(name)
            .map(|&i| &self.tensors[i])
            .ok_or_else(|| FormatError::Tensor {
                path: path(),
                tensor: name.to_string(),
                detail: "no such tensor".into(),
            })?;
        let err = |detail: String| FormatError::Tensor {
            path: path(),
            tensor: t.name.clone(),
            detail,
        };
        let bytes = self
            .map
            .bytes()
            .get(t.start..t.end)
            .ok_or_else(|| err("data out of range".into()))?;
        let mut out = vec![0.0f32; t.numel()];
        dequant::dequantize_into(t.dtype, bytes, out.len(), &mut out).map_err(&err)?;
        match self.permute_heads(&t.name)? {
            Some(n_head) => permute_gguf_to_hf(&out, n_head, t.dims[0] as usize)
                .map_err(|e| err(format!("un-permuting q/k rows: {e}"))),
            None => Ok(out),
        }
    }
}

fn info(t: &GgufTensor) -> TensorInfo {
    TensorInfo {
        name: t.hf_name.clone(),
        dtype: t.dtype,
        shape: t.shape(),
    }
}

/// One metadata value. Arrays hold values of one type.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// Any integer type, widened, if it fits in u64.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            Self::F32(v) => Some(v),
            Self::F64(v) => Some(v as f32),
            _ => self.as_u64().map(|v| v as f32),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }
}
