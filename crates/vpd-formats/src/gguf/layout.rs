//! Tensor layout: where each tensor's bytes lie, checked against the file and each other.
use std::collections::HashMap;
use std::path::Path;

use crate::error::{FormatError, Result};
use crate::source::DType;

/// One tensor as declared in the file, after every check passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufTensor {
    /// The name in the file (`blk.0.attn_q.weight`).
    pub name: String,
    /// The Hugging Face name it is exposed under (`model.layers.0.self_attn.q_proj.weight`).
    pub hf_name: String,
    pub dtype: DType,
    /// ggml type id as stored.
    pub ggml_type: u32,
    /// Dimensions as stored: fastest-varying first (`dims[0]` = columns).
    pub dims: Vec<u64>,
    /// Absolute byte range in the file.
    pub start: usize,
    pub end: usize,
}

impl GgufTensor {
    /// Row-major (Hugging Face) shape: the stored dimensions reversed.
    pub fn shape(&self) -> Vec<usize> {
        // Every dim fits in usize: the product was checked against the file size.
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    pub fn numel(&self) -> usize {
        self.dims.iter().map(|&d| d as usize).product()
    }
}

/// Turns relative (offset, size) into absolute ranges; rejects data past EOF, overlaps and
/// duplicate names (under either the GGUF or the exposed name).
pub(super) fn place_tensors(
    tensors: &mut [GgufTensor],
    data_start: usize,
    file_len: usize,
    path: &Path,
) -> Result<()> {
    let err = |t: &GgufTensor, detail: String| FormatError::Tensor {
        path: path.to_path_buf(),
        tensor: t.name.clone(),
        detail,
    };
    let mut names = HashMap::with_capacity(tensors.len() * 2);
    for (i, t) in tensors.iter_mut().enumerate() {
        let (offset, n_bytes) = (t.start, t.end);
        let start = data_start.checked_add(offset);
        let end = start.and_then(|s| s.checked_add(n_bytes));
        match (start, end) {
            (Some(s), Some(e)) if e <= file_len => (t.start, t.end) = (s, e),
            _ => {
                return Err(err(
                    t,
                    format!(
                        "{n_bytes} bytes of data at offset {offset} (+{data_start}) run past the end of the file ({file_len} bytes)"
                    ),
                ))
            }
        }
        for n in [&t.name, &t.hf_name] {
            if let Some(j) = names.insert(n.clone(), i) {
                if j != i {
                    return Err(err(t, format!("duplicate tensor name `{n}`")));
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| tensors[i].start);
    for w in order.windows(2) {
        let (a, b) = (&tensors[w[0]], &tensors[w[1]]);
        if a.end > b.start {
            return Err(err(
                b,
                format!(
                    "data [{}, {}) overlaps tensor `{}` [{}, {})",
                    b.start, b.end, a.name, a.start, a.end
                ),
            ));
        }
    }
    Ok(())
}
