//! The raw driver calls behind the lanes: SM resources, their split, green contexts and their
//! streams (CUDA 12.4+ driver API, through cudarc's `sys`), and the partition-size rules.
//!
//! cudarc loads every driver symbol lazily and *panics* when one is missing (a driver older
//! than CUDA 12.4 has no green-context entry points), so [`missing_symbol`] checks them with
//! the loader first.
#![allow(unsafe_code)]

use std::ptr;

use cudarc::driver::sys;

use crate::error::{EngineError, Result};

/// Every driver entry point the green-context path calls.
const SYMBOLS: &[&str] = &[
    "cuDeviceGetDevResource",
    "cuDevSmResourceSplitByCount",
    "cuDevResourceGenerateDesc",
    "cuGreenCtxCreate",
    "cuGreenCtxDestroy",
    "cuGreenCtxStreamCreate",
];

/// The first green-context entry point this driver lacks, if any (or `libcuda` itself).
pub(crate) fn missing_symbol() -> Option<&'static str> {
    // SAFETY: opening libcuda runs its initialisers; it is the library cudarc has already
    // opened to get this far, and nothing is called through it here.
    let lib = match unsafe { libloading::Library::new("libcuda.so.1") } {
        Ok(l) => l,
        Err(_) => return Some("libcuda.so.1"),
    };
    SYMBOLS.iter().copied().find(|name| {
        // SAFETY: the symbol is only looked up, never called, so its type does not matter.
        unsafe { lib.get::<*const ()>(name.as_bytes()) }.is_err()
    })
}

pub(crate) fn check(what: &str, r: sys::CUresult) -> Result<()> {
    r.result().map_err(|e| EngineError::Backend(format!("{what}: {e}")))
}

/// How a device's SMs may be split: every group has at least `min` SMs and a multiple of
/// `align` (8 and 8 on Hopper).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmRules {
    pub total: u32,
    pub min: u32,
    pub align: u32,
}

impl SmRules {
    /// The rules the CUDA 12.4+ documentation gives per compute capability, for drivers that
    /// do not report `minSmPartitionSize` / `smCoscheduledAlignment`.
    pub fn for_capability(total: u32, major: i32) -> Self {
        let (min, align) = match major {
            9.. => (8, 8),
            8 => (4, 2),
            _ => (2, 2),
        };
        Self { total, min, align }
    }

    /// Checks a decode partition of `sms` SMs, leaving the rest (`total - sms`) to the other lanes.
    ///
    /// # Errors
    /// [`EngineError::InvalidRequest`] on field `decode_sms`, saying which rule was broken and
    /// which sizes are valid.
    #[allow(clippy::manual_is_multiple_of)] // `is_multiple_of` needs Rust 1.87; the MSRV is 1.85
    pub fn check_decode(&self, sms: u32) -> Result<()> {
        let bad = |why: String| {
            let largest = (self.total.saturating_sub(self.min) / self.align) * self.align;
            Err(EngineError::InvalidRequest {
                field: "decode_sms",
                detail: format!(
                    "{why}; this device has {} SMs and takes partitions of at least {} SMs in steps of {} \
                     (valid decode sizes: {}..={largest} in steps of {})",
                    self.total,
                    self.min,
                    self.align,
                    self.min.div_ceil(self.align) * self.align,
                    self.align
                ),
            })
        };
        if sms < self.min {
            return bad(format!("{sms} SMs is below the minimum partition"));
        }
        if sms % self.align != 0 {
            return bad(format!("{sms} SMs is not a multiple of {}", self.align));
        }
        if sms > self.total || self.total - sms < self.min {
            return bad(format!("{sms} SMs leaves {} for the other lanes", self.total.saturating_sub(sms)));
        }
        Ok(())
    }
}

/// The device's whole SM resource and its split rules.
pub(crate) fn device_sms(cu_device: sys::CUdevice, major: i32) -> Result<(sys::CUdevResource, SmRules)> {
    // SAFETY: CUdevResource is a plain C struct (integers, a byte array, a union of integer
    // structs); all-zero is a valid value, which the driver overwrites.
    let mut res: sys::CUdevResource = unsafe { std::mem::zeroed() };
    // SAFETY: `res` is a valid out-pointer for the duration of the call; the device handle came
    // from cudarc's context for this ordinal.
    let r =
        unsafe { sys::cuDeviceGetDevResource(cu_device, &mut res, sys::CUdevResourceType::CU_DEV_RESOURCE_TYPE_SM) };
    check("cuDeviceGetDevResource(SM)", r)?;
    // SAFETY: the driver filled the SM member of the union for an SM-type query.
    let sm = unsafe { res.__bindgen_anon_1.sm };
    let mut rules = SmRules::for_capability(sm.smCount, major);
    if sm.minSmPartitionSize > 0 {
        rules.min = sm.minSmPartitionSize;
    }
    if sm.smCoscheduledAlignment > 0 {
        rules.align = sm.smCoscheduledAlignment;
    }
    Ok((res, rules))
}

/// Splits `input` into one group of exactly `sms` SMs and the remainder.
pub(crate) fn split(input: &sys::CUdevResource, sms: u32) -> Result<(sys::CUdevResource, sys::CUdevResource)> {
    // SAFETY: plain C structs, all-zero valid (see `device_sms`).
    let (mut group, mut rest): (sys::CUdevResource, sys::CUdevResource) =
        unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    let mut n = 1u32;
    // SAFETY: `group` has room for `n` = 1 resource, `rest` is a valid out-pointer and `input`
    // an SM resource the driver returned; flags 0 is the default split.
    let r = unsafe { sys::cuDevSmResourceSplitByCount(&mut group, &mut n, input, &mut rest, 0, sms) };
    check(&format!("cuDevSmResourceSplitByCount({sms} SMs)"), r)?;
    // SAFETY: both results are SM resources, so the SM member of the union is the live one.
    let (got, left) = unsafe { (group.__bindgen_anon_1.sm.smCount, rest.__bindgen_anon_1.sm.smCount) };
    if n != 1 || got != sms {
        return Err(EngineError::Backend(format!(
            "cuDevSmResourceSplitByCount: asked for one group of {sms} SMs, got {n} group(s) of {got} ({left} left)"
        )));
    }
    Ok((group, rest))
}

/// SM count of an SM resource.
pub(crate) fn sm_count(res: &sys::CUdevResource) -> u32 {
    // SAFETY: only SM resources are passed here (from `device_sms` and `split`).
    unsafe { res.__bindgen_anon_1.sm.smCount }
}

/// A green context: an SM partition of one device. Destroyed on drop (after its streams,
/// which hold an `Arc` of it).
#[derive(Debug)]
pub(crate) struct GreenCtx {
    raw: sys::CUgreenCtx,
}

// SAFETY: a CUgreenCtx is a driver handle usable from any thread; this wrapper only creates
// streams on it and destroys it once (no API here makes it current to a thread).
unsafe impl Send for GreenCtx {}
// SAFETY: as above; `&GreenCtx` only reads the handle.
unsafe impl Sync for GreenCtx {}

impl GreenCtx {
    pub(crate) fn new(cu_device: sys::CUdevice, res: &sys::CUdevResource) -> Result<Self> {
        let mut res = *res;
        let mut desc: sys::CUdevResourceDesc = ptr::null_mut();
        // SAFETY: `desc` is a valid out-pointer and `res` one valid SM resource (count 1).
        check("cuDevResourceGenerateDesc", unsafe { sys::cuDevResourceGenerateDesc(&mut desc, &mut res, 1) })?;
        let mut raw: sys::CUgreenCtx = ptr::null_mut();
        let flags = sys::CUgreenCtxCreate_flags::CU_GREEN_CTX_DEFAULT_STREAM as u32;
        // SAFETY: `raw` is a valid out-pointer; `desc` was generated just above for this device.
        check("cuGreenCtxCreate", unsafe { sys::cuGreenCtxCreate(&mut raw, desc, cu_device, flags) })?;
        debug_assert!(!raw.is_null());
        Ok(Self { raw })
    }

    /// A non-blocking stream whose kernels run on this context's SMs.
    pub(crate) fn stream(&self, priority: i32) -> Result<sys::CUstream> {
        let mut s: sys::CUstream = ptr::null_mut();
        let flags = sys::CUstream_flags::CU_STREAM_NON_BLOCKING as u32;
        // SAFETY: `s` is a valid out-pointer and `self.raw` a live green context (destroyed only
        // in Drop, which cannot run while `&self` exists).
        check("cuGreenCtxStreamCreate", unsafe { sys::cuGreenCtxStreamCreate(&mut s, self.raw, flags, priority) })?;
        Ok(s)
    }
}

impl Drop for GreenCtx {
    fn drop(&mut self) {
        // SAFETY: created by cuGreenCtxCreate and destroyed only here; every stream made on it
        // holds an Arc of this value and is destroyed first.
        let r = unsafe { sys::cuGreenCtxDestroy(self.raw) };
        if let Err(e) = check("cuGreenCtxDestroy", r) {
            tracing::warn!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hopper() -> SmRules {
        SmRules::for_capability(132, 9)
    }

    #[test]
    fn hopper_partitions_are_multiples_of_eight() {
        for ok in [8, 16, 48, 64, 120, 124 - 4] {
            assert!(hopper().check_decode(ok).is_ok(), "{ok}");
        }
        for bad in [0, 4, 12, 50, 132, 128] {
            let e = hopper().check_decode(bad).expect_err("invalid size");
            assert!(matches!(e, EngineError::InvalidRequest { field: "decode_sms", .. }), "{e}");
        }
    }

    #[test]
    fn the_error_names_the_valid_sizes() {
        let e = hopper().check_decode(50).expect_err("50 is not a multiple of 8").to_string();
        assert!(e.contains("not a multiple of 8") && e.contains("8..=120"), "{e}");
        let e = hopper().check_decode(128).expect_err("leaves 4").to_string();
        assert!(e.contains("leaves 4"), "{e}");
    }

    #[test]
    fn a_machine_without_a_driver_reports_libcuda_missing_instead_of_panicking() {
        if crate::backend::cuda::driver_present() {
            return; // the GPU machine: the isolation bench covers the real path
        }
        assert_eq!(missing_symbol(), Some("libcuda.so.1"));
    }

    #[test]
    fn older_cards_take_smaller_steps() {
        let a100 = SmRules::for_capability(108, 8);
        assert!(a100.check_decode(6).is_ok());
        assert!(a100.check_decode(2).is_err());
    }
}
