//! The CUDA kernels compiled by `build.rs` (one fatbin per `csrc/` file) and the parameter
//! structs bindgen generated from `csrc/include/vpd_params.h`. Empty when the build found no
//! CUDA compiler; the CUDA backend reports that instead of failing.
#[cfg(vpd_kernels)]
#[allow(non_camel_case_types, non_snake_case, non_upper_case_globals, dead_code, clippy::all)]
pub mod params {
    include!(concat!(env!("OUT_DIR"), "/vpd_params.rs"));
}

#[cfg(vpd_kernels)]
include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

/// (family, fatbin) for every kernel file; empty in a CPU-only build.
#[cfg(not(vpd_kernels))]
pub const FATBINS: &[(&str, &[u8])] = &[];

/// Whether this binary carries compiled kernels.
pub fn compiled() -> bool {
    !FATBINS.is_empty()
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(vpd_kernels)]
    fn every_kernel_file_is_embedded_as_a_fatbin() {
        let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/csrc"))
            .unwrap()
            .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "cu")))
            .count();
        assert_eq!(super::FATBINS.len(), files);
        for (name, bytes) in super::FATBINS {
            // A fatbin starts with the magic 0xBA55ED50 (little-endian).
            assert_eq!(&bytes[..4], &[0x50, 0xED, 0x55, 0xBA], "{name} is not a fatbin");
        }
    }

    #[test]
    #[cfg(vpd_kernels)]
    fn params_struct_layout_matches_c() {
        use super::params::*;
        use std::mem::{offset_of, size_of};
        // Pointers first, then 32-bit fields, padded to pointer alignment: the C layout the
        // kernels read. bindgen's own layout tests check the rest.
        assert_eq!(size_of::<RmsNormParams>(), 56);
        assert_eq!(offset_of!(RmsNormParams, rows), 40);
        assert_eq!(offset_of!(RmsNormParams, eps), 48);
        assert_eq!(size_of::<EmbeddingParams>(), 32);
        assert_eq!(offset_of!(RopeKvParams, tokens), 48);
        assert_eq!(size_of::<RopeKvParams>(), 72);
        assert_eq!(offset_of!(PagedAttnParams, tokens), 88);
        assert_eq!(offset_of!(PagedAttnParams, scale), 124);
        assert_eq!(size_of::<PagedAttnParams>(), 128);
        assert_eq!(offset_of!(KvCopyParams, plane), 32);
        assert_eq!(size_of::<SwigluParams>(), 24);
        assert_eq!(offset_of!(SampleParams, counter), 40);
        assert_eq!(offset_of!(SampleParams, probs), 56);
        assert_eq!(offset_of!(SampleParams, offset), 64);
        assert_eq!(offset_of!(SampleParams, vocab), 76);
        assert_eq!(offset_of!(SampleParams, stream), 80);
        assert_eq!(size_of::<SampleParams>(), 88);
        assert_eq!(offset_of!(ChainVerifyParams, draft_rows), 16);
        assert_eq!(offset_of!(ChainVerifyParams, target_row), 24);
        assert_eq!(offset_of!(ChainVerifyParams, counter), 56);
        assert_eq!(offset_of!(ChainVerifyParams, offset), 80);
        assert_eq!(offset_of!(ChainVerifyParams, max_draft), 96);
        assert_eq!(size_of::<ChainVerifyParams>(), 104);
        assert_eq!(offset_of!(TreeVerifyParams, offset), 88);
        assert_eq!(offset_of!(TreeVerifyParams, without_replacement), 108);
        assert_eq!(size_of::<TreeVerifyParams>(), 112);
        assert_eq!(offset_of!(GemvParams, tokens), 88);
        assert_eq!(offset_of!(GemvParams, beta), 124);
        assert_eq!(size_of::<GemvParams>(), 136);
        assert_eq!((GEMV_MAX_T, GEMV_OUT_F32, GEMV_OUT_SWIGLU, GEMV_OUT_ROPE_KV), (4, 0, 1, 2));
    }
}
