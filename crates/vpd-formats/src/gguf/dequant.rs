//! ggml tensor types and their conversion to f32.
//!
//! Block layouts follow ggml's `ggml-common.h` (`block_q8_0`, `block_q4_0`, `block_q4_1`):
//! little-endian f16 scale(s) then the packed quants, 32 weights per block. For the 4-bit
//! types, byte `j` holds element `j` in its low nibble and element `j + 16` in its high one.
//!
//! The loops are deliberately plain `chunks_exact` walks over whole blocks: no bounds checks
//! survive in the inner loop, and they stay fast even in our opt-level-1 dev builds.
use half::{bf16, f16};

use crate::error::{FormatError, Result};
use crate::source::DType;

/// Weights per block and bytes per block of a type.
pub fn block_layout(dtype: DType) -> (usize, usize) {
    match dtype {
        DType::F32 => (1, 4),
        DType::F16 | DType::BF16 => (1, 2),
        DType::Q8_0 => (32, 34),
        DType::Q4_0 => (32, 18),
        DType::Q4_1 => (32, 20),
    }
}

/// ggml's name for a type id, for error messages (ids from `enum ggml_type`).
pub fn ggml_type_name(id: u32) -> Option<&'static str> {
    const NAMES: [&str; 40] = [
        "F32",
        "F16",
        "Q4_0",
        "Q4_1",
        "Q4_2 (removed)",
        "Q4_3 (removed)",
        "Q5_0",
        "Q5_1",
        "Q8_0",
        "Q8_1",
        "Q2_K",
        "Q3_K",
        "Q4_K",
        "Q5_K",
        "Q6_K",
        "Q8_K",
        "IQ2_XXS",
        "IQ2_XS",
        "IQ3_XXS",
        "IQ1_S",
        "IQ4_NL",
        "IQ3_S",
        "IQ2_S",
        "IQ4_XS",
        "I8",
        "I16",
        "I32",
        "I64",
        "F64",
        "IQ1_M",
        "BF16",
        "Q4_0_4_4 (removed)",
        "Q4_0_4_8 (removed)",
        "Q4_0_8_8 (removed)",
        "TQ1_0",
        "TQ2_0",
        "IQ4_NL_4_4 (removed)",
        "IQ4_NL_4_8 (removed)",
        "IQ4_NL_8_8 (removed)",
        "MXFP4",
    ];
    NAMES.get(id as usize).copied()
}

/// The [`DType`] of a ggml type id, or a message naming the unknown or unsupported id.
pub fn ggml_type(id: u32) -> Result<DType, String> {
    Ok(match id {
        0 => DType::F32,
        1 => DType::F16,
        2 => DType::Q4_0,
        3 => DType::Q4_1,
        8 => DType::Q8_0,
        30 => DType::BF16,
        _ => {
            return Err(match ggml_type_name(id) {
                Some(name) => format!(
                "unsupported ggml type {id} ({name}); supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1"
            ),
                None => format!("unknown ggml type id {id}"),
            })
        }
    })
}

/// Converts `n` elements of `dtype` from `bytes` into `out` (`out.len() == n`).
///
/// # Errors
/// `n` is not a whole number of blocks, or `bytes`/`out` have the wrong length.
pub fn dequantize(dtype: DType, bytes: &[u8], n: usize, out: &mut [f32]) -> Result<()> {
    dequantize_into(dtype, bytes, n, out).map_err(|detail| FormatError::Corrupt {
        path: "<buffer>".into(),
        detail,
    })
}

/// [`dequantize`] with a plain message, for callers that name the file and tensor.
pub(super) fn dequantize_into(
    dtype: DType,
    bytes: &[u8],
    n: usize,
    out: &mut [f32],
) -> Result<(), String> {
    let (block, block_bytes) = block_layout(dtype);
    if n % block != 0 {
        return Err(format!(
            "{n} elements is not a multiple of the {dtype:?} block size {block}"
        ));
    }
    let want = n / block * block_bytes;
    if bytes.len() != want || out.len() != n {
        return Err(format!(
            "{n} {dtype:?} elements need {want} bytes and {n} outputs, got {} bytes and {} outputs",
            bytes.len(),
            out.len()
        ));
    }
    match dtype {
        DType::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        DType::F16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        DType::BF16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        DType::Q8_0 => {
            for (o, b) in out.chunks_exact_mut(32).zip(bytes.chunks_exact(34)) {
                let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                for (x, &q) in o.iter_mut().zip(&b[2..34]) {
                    *x = f32::from(q as i8) * d;
                }
            }
        }
        DType::Q4_0 => {
            for (o, b) in out.chunks_exact_mut(32).zip(bytes.chunks_exact(18)) {
                let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                let (lo, hi) = o.split_at_mut(16);
                for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(&b[2..18]) {
                    *l = (f32::from(q & 0x0f) - 8.0) * d;
                    *h = (f32::from(q >> 4) - 8.0) * d;
                }
            }
        }
        DType::Q4_1 => {
            for (o, b) in out.chunks_exact_mut(32).zip(bytes.chunks_exact(20)) {
                let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                let m = f16::from_le_bytes([b[2], b[3]]).to_f32();
                let (lo, hi) = o.split_at_mut(16);
                for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(&b[4..20]) {
                    *l = f32::from(q & 0x0f) * d + m;
                    *h = f32::from(q >> 4) * d + m;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_0_nibble_order_and_offset() {
        let mut b = vec![0u8; 18];
        b[..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        for j in 0..16 {
            b[2 + j] = (j as u8) | ((15 - j as u8) << 4);
        }
        let mut out = vec![0.0; 32];
        dequantize(DType::Q4_0, &b, 32, &mut out).unwrap();
        for j in 0..16 {
            assert_eq!(out[j], (j as f32 - 8.0) * 0.5);
            assert_eq!(out[16 + j], (15.0 - j as f32 - 8.0) * 0.5);
        }
    }

    #[test]
    fn q4_1_and_q8_0_scale_and_min() {
        let mut b = vec![0u8; 20];
        b[..2].copy_from_slice(&f16::from_f32(2.0).to_le_bytes());
        b[2..4].copy_from_slice(&f16::from_f32(-1.0).to_le_bytes());
        b[4] = 0x3a; // element 0 = 10, element 16 = 3
        let mut out = vec![0.0; 32];
        dequantize(DType::Q4_1, &b, 32, &mut out).unwrap();
        assert_eq!((out[0], out[16], out[1]), (19.0, 5.0, -1.0));

        let mut b = vec![0u8; 34];
        b[..2].copy_from_slice(&f16::from_f32(0.25).to_le_bytes());
        b[2] = (-4i8) as u8;
        b[33] = 127;
        dequantize(DType::Q8_0, &b, 32, &mut out).unwrap();
        assert_eq!((out[0], out[31]), (-1.0, 31.75));
    }

    #[test]
    fn rejects_ragged_input() {
        let mut out = vec![0.0; 33];
        assert!(dequantize(DType::Q8_0, &[0; 34], 33, &mut out).is_err());
        assert!(dequantize(DType::F32, &[0; 7], 2, &mut out[..2]).is_err());
        assert!(dequantize(DType::F16, &[0; 4], 2, &mut out[..3]).is_err());
    }

    #[test]
    fn type_ids_name_the_unsupported() {
        assert_eq!(ggml_type(30), Ok(DType::BF16));
        assert!(ggml_type(14).unwrap_err().contains("Q6_K"));
        assert!(ggml_type(999).unwrap_err().contains("999"));
    }
}
