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
        use super::params::RmsNormParams;
        // 4 pointers, 2 u32, 1 f32, padded to pointer alignment.
        assert_eq!(std::mem::size_of::<RmsNormParams>(), 48);
        assert_eq!(std::mem::offset_of!(RmsNormParams, rows), 32);
        assert_eq!(std::mem::offset_of!(RmsNormParams, eps), 40);
    }
}
