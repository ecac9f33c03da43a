//! One memory-mapped `*.safetensors` file: header parsed by the `safetensors` crate
//! (`SafeTensors::read_metadata`, which checks offsets, overlaps and the total length),
//! tensor bytes left in the map.
//!
//! Layout (safetensors spec): u64 little-endian header length N, N bytes of JSON header,
//! then the data section; each tensor's `data_offsets` are relative to the data section.
use std::ops::Range;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::error::{FormatError, Result};
use crate::mmap::MappedFile;
use crate::source::DType;

/// Where one tensor lives: its shard, type, shape and absolute byte range in the file.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub shard: usize,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: Range<usize>,
}

/// Maps `path` and lists its tensors (name, entry with `shard` set to `shard`).
pub(crate) fn open_shard(path: &Path, shard: usize) -> Result<(MappedFile, Vec<(String, Entry)>)> {
    let file = MappedFile::open(path)?;
    let bytes = file.bytes();
    let corrupt = |detail: String| FormatError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let (n, meta) = SafeTensors::read_metadata(bytes).map_err(|e| {
        // Say what the length prefix claimed: the usual symptom of a truncated or non-safetensors file.
        let declared = bytes
            .get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
        match declared {
            Some(d) => corrupt(format!(
                "safetensors header (declared length {d} bytes, file {} bytes): {e}",
                bytes.len()
            )),
            None => corrupt(format!(
                "safetensors file is only {} bytes: {e}",
                bytes.len()
            )),
        }
    })?;
    let data_start = 8 + n;
    let mut out = Vec::new();
    for (name, info) in meta.tensors() {
        let dtype = match info.dtype {
            Dtype::BF16 => DType::BF16,
            Dtype::F16 => DType::F16,
            Dtype::F32 => DType::F32,
            other => {
                return Err(FormatError::Unsupported {
                    path: path.to_path_buf(),
                    what: "tensor dtype",
                    detail: format!(
                        "tensor `{name}` has dtype {other:?} (supported: BF16, F16, F32)"
                    ),
                })
            }
        };
        let (a, b) = info.data_offsets;
        // read_metadata validated offsets against the buffer; the additions cannot overflow.
        out.push((
            name,
            Entry {
                shard,
                dtype,
                shape: info.shape.clone(),
                bytes: data_start + a..data_start + b,
            },
        ));
    }
    out.sort_by(|x, y| x.0.cmp(&y.0));
    Ok((file, out))
}
