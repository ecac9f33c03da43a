//! Byte-level GGUF parsing: header, metadata key/values, tensor infos and the data layout.
//!
//! Every length or count read from the file is checked against the bytes that are left
//! *before* anything is allocated, so a hostile header cannot make us reserve gigabytes or
//! index past the map. Errors carry a plain `String` detail here; the caller wraps them in a
//! [`FormatError`] variant naming the file and the key or tensor.
use std::collections::BTreeMap;
use std::path::Path;

use super::dequant::{block_layout, ggml_type};
use super::layout::{place_tensors, GgufTensor};
use super::GgufValue;
use crate::error::{FormatError, Result};

pub(super) const MAGIC: &[u8; 4] = b"GGUF";
/// Only v3 is accepted: v1 used 32-bit counts, v2 is superseded and rare in the wild.
pub(super) const VERSION: u32 = 3;
/// Caps far above any real model (Llama 3 405B has ~1.1k tensors, ~40 keys).
pub(super) const MAX_TENSORS: u64 = 1 << 20;
pub(super) const MAX_KVS: u64 = 1 << 20;
/// Arrays of arrays are legal; deeper nesting than this is only ever an attack on the stack.
pub(super) const MAX_ARRAY_DEPTH: usize = 8;
/// ggml's `GGML_MAX_NAME`: names are at most 64 bytes including the NUL.
pub(super) const MAX_TENSOR_NAME: usize = 63;
pub(super) const MAX_DIMS: u32 = 4;
pub(super) const DEFAULT_ALIGNMENT: u64 = 32;

/// Little-endian cursor over the mapped bytes; never reads past the end.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(super) fn pos(&self) -> usize {
        self.pos
    }

    pub(super) fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.left() {
            return Err(format!(
                "truncated: needs {n} bytes at offset {}, only {} left",
                self.pos,
                self.left()
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub(super) fn u32(&mut self) -> Result<u32, String> {
        self.array().map(u32::from_le_bytes)
    }

    pub(super) fn u64(&mut self) -> Result<u64, String> {
        self.array().map(u64::from_le_bytes)
    }

    /// A `u64` length followed by that many UTF-8 bytes.
    pub(super) fn string(&mut self) -> Result<String, String> {
        let at = self.pos;
        let len = self.u64()?;
        if len > self.left() as u64 {
            return Err(format!(
                "string at offset {at} claims {len} bytes, only {} left",
                self.left()
            ));
        }
        let bytes = self.take(len as usize)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| format!("string at offset {at} is not UTF-8: {e}"))
    }

    /// One metadata value of type `ty`; `depth` counts enclosing arrays.
    pub(super) fn value(&mut self, ty: u32, depth: usize) -> Result<GgufValue, String> {
        use GgufValue as V;
        Ok(match ty {
            0 => V::U8(self.array::<1>()?[0]),
            1 => V::I8(i8::from_le_bytes(self.array()?)),
            2 => V::U16(u16::from_le_bytes(self.array()?)),
            3 => V::I16(i16::from_le_bytes(self.array()?)),
            4 => V::U32(u32::from_le_bytes(self.array()?)),
            5 => V::I32(i32::from_le_bytes(self.array()?)),
            6 => V::F32(f32::from_le_bytes(self.array()?)),
            7 => match self.array::<1>()?[0] {
                0 => V::Bool(false),
                1 => V::Bool(true),
                b => return Err(format!("bool byte is {b}, neither 0 nor 1")),
            },
            8 => V::String(self.string()?),
            9 => self.array_value(depth)?,
            10 => V::U64(u64::from_le_bytes(self.array()?)),
            11 => V::I64(i64::from_le_bytes(self.array()?)),
            12 => V::F64(f64::from_le_bytes(self.array()?)),
            _ => return Err(format!("unknown value type {ty}")),
        })
    }

    fn array_value(&mut self, depth: usize) -> Result<GgufValue, String> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(format!("arrays nested deeper than {MAX_ARRAY_DEPTH}"));
        }
        let elem = self.u32()?;
        let len = self.u64()?;
        let min =
            min_value_size(elem).ok_or_else(|| format!("unknown array element type {elem}"))?;
        // Each element needs at least `min` bytes, so a longer array cannot be in the file.
        match len.checked_mul(min) {
            Some(need) if need <= self.left() as u64 => {}
            _ => {
                return Err(format!(
                    "array of {len} elements of type {elem} needs at least {min} bytes each, only {} left",
                    self.left()
                ))
            }
        }
        let mut out = Vec::with_capacity(len as usize);
        for i in 0..len {
            out.push(
                self.value(elem, depth + 1)
                    .map_err(|e| format!("array element {i}: {e}"))?,
            );
        }
        Ok(GgufValue::Array(out))
    }
}

/// Smallest encoding of a value of type `ty`, or `None` if the type is unknown.
fn min_value_size(ty: u32) -> Option<u64> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8, // a string is at least its u64 length
        9 => 12,          // element type + length
        _ => return None,
    })
}

/// What [`parse`] found: metadata, tensors in file order, and the data section's start.
pub(super) struct Parsed {
    pub metadata: BTreeMap<String, GgufValue>,
    pub tensors: Vec<GgufTensor>,
    pub alignment: u64,
    pub data_start: usize,
}

/// Parses and validates the whole file. `hf_name` maps GGUF tensor names to exposed names.
pub(super) fn parse(bytes: &[u8], path: &Path, hf_name: impl Fn(&str) -> String) -> Result<Parsed> {
    let p = || path.to_path_buf();
    let corrupt = |detail: String| FormatError::Corrupt { path: p(), detail };
    let mut r = Reader::new(bytes);

    let magic = r.array::<4>().map_err(|e| FormatError::BadMagic {
        path: p(),
        format: "GGUF",
        detail: format!("file too short for the magic ({e})"),
    })?;
    if &magic != MAGIC {
        return Err(FormatError::BadMagic {
            path: p(),
            format: "GGUF",
            detail: format!("magic is {magic:02x?}, expected \"GGUF\""),
        });
    }
    let version = r
        .u32()
        .map_err(|e| corrupt(format!("header: version: {e}")))?;
    if version != VERSION {
        return Err(FormatError::Unsupported {
            path: p(),
            what: "GGUF version",
            detail: format!("{version} (only version {VERSION} is read)"),
        });
    }
    let n_tensors = r
        .u64()
        .map_err(|e| corrupt(format!("header: tensor_count: {e}")))?;
    let n_kv = r
        .u64()
        .map_err(|e| corrupt(format!("header: metadata_kv_count: {e}")))?;
    // A key/value takes at least 13 bytes (empty key, type, 1-byte value); a tensor info at
    // least 32 (empty name, n_dims, one dim, type, offset). Larger counts cannot be honest.
    let need = n_kv
        .checked_mul(13)
        .zip(n_tensors.checked_mul(32))
        .and_then(|(a, b)| a.checked_add(b));
    if n_tensors > MAX_TENSORS || n_kv > MAX_KVS || need.is_none_or(|n| n > r.left() as u64) {
        return Err(corrupt(format!(
            "header: tensor_count {n_tensors} / metadata_kv_count {n_kv} cannot fit in the {} bytes left \
             (caps: {MAX_TENSORS} tensors, {MAX_KVS} keys)",
            r.left()
        )));
    }

    let mut metadata = BTreeMap::new();
    for i in 0..n_kv {
        let key = r
            .string()
            .map_err(|e| corrupt(format!("metadata key #{i}: {e}")))?;
        let field = |detail: String| FormatError::Field {
            path: p(),
            field: key.clone(),
            detail,
        };
        let ty = r.u32().map_err(|e| field(format!("value type: {e}")))?;
        let value = r.value(ty, 0).map_err(&field)?;
        if metadata.contains_key(&key) {
            return Err(field("duplicate key".into()));
        }
        metadata.insert(key, value);
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_u64() {
            Some(a) if a.is_power_of_two() && a <= 1 << 30 => a,
            _ => {
                return Err(FormatError::Field {
                    path: p(),
                    field: "general.alignment".into(),
                    detail: format!("{v:?} is not a nonzero power of two (at most 2^30)"),
                })
            }
        },
    };

    let mut tensors = Vec::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let name = r
            .string()
            .map_err(|e| corrupt(format!("tensor info #{i}: name: {e}")))?;
        tensors.push(tensor_info(&mut r, name, alignment, path, &hf_name)?);
    }

    // The data section starts at the next multiple of the alignment after the infos.
    let data_start = (r.pos() as u64).next_multiple_of(alignment);
    if data_start > bytes.len() as u64 && !tensors.is_empty() {
        return Err(corrupt(format!(
            "data section would start at {data_start}, past the end of the file ({} bytes)",
            bytes.len()
        )));
    }
    let data_start = data_start.min(bytes.len() as u64) as usize;
    place_tensors(&mut tensors, data_start, bytes.len(), path)?;
    Ok(Parsed {
        metadata,
        tensors,
        alignment,
        data_start,
    })
}

/// Reads one tensor info after its name; offsets are resolved later by `place_tensors`.
fn tensor_info(
    r: &mut Reader<'_>,
    name: String,
    alignment: u64,
    path: &Path,
    hf_name: &impl Fn(&str) -> String,
) -> Result<GgufTensor> {
    let err = |detail: String| FormatError::Tensor {
        path: path.to_path_buf(),
        tensor: name.clone(),
        detail,
    };
    if name.is_empty() || name.len() > MAX_TENSOR_NAME {
        return Err(err(format!(
            "name length {} is not in 1..={MAX_TENSOR_NAME}",
            name.len()
        )));
    }
    let n_dims = r.u32().map_err(|e| err(format!("n_dims: {e}")))?;
    if n_dims == 0 || n_dims > MAX_DIMS {
        return Err(err(format!("n_dims is {n_dims}, must be 1..={MAX_DIMS}")));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    let mut numel: u64 = 1;
    for k in 0..n_dims {
        let d = r.u64().map_err(|e| err(format!("dimension {k}: {e}")))?;
        if d == 0 {
            return Err(err(format!("dimension {k} is 0")));
        }
        numel = numel
            .checked_mul(d)
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| {
                err(format!(
                    "element count overflows (dims so far {dims:?} × {d})"
                ))
            })?;
        dims.push(d);
    }
    let ggml = r.u32().map_err(|e| err(format!("type: {e}")))?;
    let dtype = ggml_type(ggml).map_err(&err)?;
    let (block, block_bytes) = block_layout(dtype);
    if dims[0] % block as u64 != 0 {
        return Err(err(format!(
            "row of {} elements is not a multiple of the {dtype:?} block size {block}",
            dims[0]
        )));
    }
    let n_bytes = (numel / block as u64)
        .checked_mul(block_bytes as u64)
        .ok_or_else(|| err(format!("byte size of {numel} {dtype:?} elements overflows")))?;
    let offset = r.u64().map_err(|e| err(format!("offset: {e}")))?;
    if offset % alignment != 0 {
        return Err(err(format!(
            "data offset {offset} is not aligned to general.alignment = {alignment}"
        )));
    }
    // Keep the relative offset and byte size in start/end until the data section is known.
    let (start, end) = match (usize::try_from(offset), usize::try_from(n_bytes)) {
        (Ok(s), Ok(n)) => (s, n),
        _ => {
            return Err(err(format!(
                "offset {offset} / size {n_bytes} do not fit in memory"
            )))
        }
    };
    let hf = hf_name(&name);
    Ok(GgufTensor {
        name,
        hf_name: hf,
        dtype,
        ggml_type: ggml,
        dims,
        start,
        end,
    })
}
