//! The checked layer between cudarc and the rest of the CUDA backend (STYLE.md 1): finds the
//! driver without panicking, owns the context, the one stream, the cuBLAS handle and the
//! loaded kernel functions, and turns every status into [`EngineError`].
//!
//! cudarc loads `libcuda` and `libcublas` lazily and *panics* when they are missing, so
//! [`Device::open`] first opens both libraries itself through `libloading` and returns
//! "no CUDA driver found" instead.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr,
};
use cudarc::nvrtc::Ptx;

use crate::error::{EngineError, Result};
use crate::kernels;

/// Library names tried for the driver and cuBLAS, the sonames cudarc itself will ask for.
const DRIVER_LIBS: &[&str] = &["libcuda.so.1", "libcuda.so"];
const CUBLAS_LIBS: &[&str] = &["libcublas.so.13", "libcublas.so"];

/// Whether one of `names` can be opened by the dynamic loader.
fn loadable(names: &[&str]) -> bool {
    names.iter().any(|n| {
        // SAFETY: opening a system library runs its initialisers; libcuda and libcublas are the
        // libraries cudarc would open moments later anyway, and nothing is called from them here.
        unsafe { libloading::Library::new(n) }.is_ok()
    })
}

/// Whether this machine has a CUDA driver (and so whether [`Device::open`] can get further
/// than "no CUDA driver found").
pub fn driver_present() -> bool {
    loadable(DRIVER_LIBS)
}

pub(crate) fn drv(e: cudarc::driver::DriverError) -> EngineError {
    EngineError::Backend(format!("CUDA driver: {e}"))
}

pub(crate) fn blas(e: cudarc::cublas::result::CublasError) -> EngineError {
    EngineError::Backend(format!("cuBLAS: {e:?}"))
}

/// One GPU: context, stream, cuBLAS and the kernels of every `csrc/` family.
pub struct Device {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub blas: cudarc::cublas::CudaBlas,
    functions: HashMap<&'static str, CudaFunction>,
    _modules: Vec<Arc<CudaModule>>,
    pub name: String,
    pub sm_count: u32,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device").field("name", &self.name).field("sm_count", &self.sm_count).finish_non_exhaustive()
    }
}

/// Every kernel the backend launches, by `(family, function)`.
const FUNCTIONS: &[(&str, &str)] = &[
    ("embedding", "embedding_kernel"),
    ("rms_norm", "rms_norm_kernel"),
    ("rope_kv", "rope_kv_kernel"),
    ("swiglu", "swiglu_kernel"),
    ("attention", "paged_attn_kernel"),
    ("attention", "attn_combine_kernel"),
    ("attention", "paged_attn_gqa1_kernel"),
    ("attention", "paged_attn_gqa2_kernel"),
    ("attention", "paged_attn_gqa3_kernel"),
    ("attention", "paged_attn_gqa4_kernel"),
    ("attention", "paged_attn_gqa5_kernel"),
    ("attention", "paged_attn_gqa6_kernel"),
    ("attention", "paged_attn_gqa7_kernel"),
    ("attention", "paged_attn_gqa8_kernel"),
    ("attention", "paged_attn_gqa1_d64_kernel"),
    ("attention", "paged_attn_gqa2_d64_kernel"),
    ("attention", "paged_attn_gqa3_d64_kernel"),
    ("attention", "paged_attn_gqa4_d64_kernel"),
    ("attention", "paged_attn_gqa5_d64_kernel"),
    ("attention", "paged_attn_gqa6_d64_kernel"),
    ("attention", "paged_attn_gqa7_d64_kernel"),
    ("attention", "paged_attn_gqa8_d64_kernel"),
    ("attention", "paged_attn_gqa1_d128_kernel"),
    ("attention", "paged_attn_gqa2_d128_kernel"),
    ("attention", "paged_attn_gqa3_d128_kernel"),
    ("attention", "paged_attn_gqa4_d128_kernel"),
    ("attention", "paged_attn_gqa5_d128_kernel"),
    ("attention", "paged_attn_gqa6_d128_kernel"),
    ("attention", "paged_attn_gqa7_d128_kernel"),
    ("attention", "paged_attn_gqa8_d128_kernel"),
    ("attention_mma", "paged_attn_mma1_d64_kernel"),
    ("attention_mma", "paged_attn_mma2_d64_kernel"),
    ("attention_mma", "paged_attn_mma3_d64_kernel"),
    ("attention_mma", "paged_attn_mma4_d64_kernel"),
    ("attention_mma", "paged_attn_mma5_d64_kernel"),
    ("attention_mma", "paged_attn_mma6_d64_kernel"),
    ("attention_mma", "paged_attn_mma7_d64_kernel"),
    ("attention_mma", "paged_attn_mma8_d64_kernel"),
    ("attention_mma", "paged_attn_mma1_d128_kernel"),
    ("attention_mma", "paged_attn_mma2_d128_kernel"),
    ("attention_mma", "paged_attn_mma3_d128_kernel"),
    ("attention_mma", "paged_attn_mma4_d128_kernel"),
    ("attention_mma", "paged_attn_mma5_d128_kernel"),
    ("attention_mma", "paged_attn_mma6_d128_kernel"),
    ("attention_mma", "paged_attn_mma7_d128_kernel"),
    ("attention_mma", "paged_attn_mma8_d128_kernel"),
    ("attention_mma", "paged_attn_mmaq1_d64_kernel"),
    ("attention_mma", "paged_attn_mmaq2_d64_kernel"),
    ("attention_mma", "paged_attn_mmaq3_d64_kernel"),
    ("attention_mma", "paged_attn_mmaq4_d64_kernel"),
    ("attention_mma", "paged_attn_mmaq5_d64_kernel"),
    ("attention_mma", "paged_attn_mmaq6_d64_kernel"),
    ("attention_mma", "paged_attn_mmaq7_d64_kernel"),
    ("attention_mma", "paged_attn_mmaq8_d64_kernel"),
    ("attention_mma", "paged_attn_mmaq1_d128_kernel"),
    ("attention_mma", "paged_attn_mmaq2_d128_kernel"),
    ("attention_mma", "paged_attn_mmaq3_d128_kernel"),
    ("attention_mma", "paged_attn_mmaq4_d128_kernel"),
    ("attention_mma", "paged_attn_mmaq5_d128_kernel"),
    ("attention_mma", "paged_attn_mmaq6_d128_kernel"),
    ("attention_mma", "paged_attn_mmaq7_d128_kernel"),
    ("attention_mma", "paged_attn_mmaq8_d128_kernel"),
    ("gemv", "gemv1_kernel"),
    ("gemv", "gemv2_kernel"),
    ("gemv", "gemv3_kernel"),
    ("gemv", "gemv4_kernel"),
    ("gemv", "gemv_norm1_kernel"),
    ("gemv", "gemv_norm2_kernel"),
    ("gemv", "gemv_norm3_kernel"),
    ("gemv", "gemv_norm4_kernel"),
    ("init", "fill_random_bf16_kernel"),
    ("kv_copy", "kv_copy_kernel"),
    ("sampling", "sample_kernel"),
    ("sampling", "chain_verify_kernel"),
    ("sampling", "chain_verify_greedy_kernel"),
    ("tree_verify", "tree_verify_kernel"),
    ("tree_verify", "tree_verify_greedy_kernel"),
];

impl Device {
    /// Opens GPU `ordinal`: driver check, context, stream, cuBLAS, kernel modules.
    ///
    /// # Errors
    /// No driver ("no CUDA driver found"), no cuBLAS, a binary built without kernels, or any
    /// driver failure (no device, a fatbin without code for this card).
    pub fn open(ordinal: usize) -> Result<Self> {
        if !driver_present() {
            return Err(EngineError::Backend("no CUDA driver found (could not load libcuda.so.1)".into()));
        }
        if !loadable(CUBLAS_LIBS) {
            return Err(EngineError::Backend(
                "no cuBLAS found (libcublas.so.13): add the CUDA 13 lib64 folder to LD_LIBRARY_PATH".into(),
            ));
        }
        if !kernels::compiled() {
            return Err(EngineError::Backend(
                "this binary was built without CUDA kernels (no nvcc at build time)".into(),
            ));
        }
        let ctx = CudaContext::new(ordinal).map_err(drv)?;
        // One stream per backend, so cudarc's per-buffer event tracking (for multi-stream use)
        // would only add work; later per-lane streams will order themselves with events.
        // SAFETY: called before any allocation on this context; all work goes to one stream.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(drv)?;
        let blas = cudarc::cublas::CudaBlas::new(stream.clone()).map_err(blas)?;
        let mut modules = Vec::new();
        let mut functions = HashMap::new();
        for &(family, bytes) in kernels::FATBINS {
            let m = ctx.load_module(Ptx::from_binary(bytes.to_vec())).map_err(|e| {
                EngineError::Backend(format!("loading kernel family `{family}` (fatbin for sm_80/sm_90): {e}"))
            })?;
            for &(fam, name) in FUNCTIONS.iter().filter(|(f, _)| *f == family) {
                let f = m.load_function(name).map_err(|e| EngineError::Backend(format!("{fam}: {name}: {e}")))?;
                if fam == "attention_mma" {
                    // Its occupancy is bound by shared memory (the staging ring): ask for the
                    // largest carveout so that 9 blocks fit a SM on Hopper, not the driver's pick.
                    f.set_attribute(
                        cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT,
                        100,
                    )
                    .map_err(|e| EngineError::Backend(format!("{fam}: {name}: shared-memory carveout: {e}")))?;
                }
                functions.insert(name, f);
            }
            modules.push(m);
        }
        if let Some((fam, name)) = FUNCTIONS.iter().find(|(_, n)| !functions.contains_key(n)) {
            return Err(EngineError::Backend(format!("kernel `{name}` of family `{fam}` is not in this binary")));
        }
        let name = ctx.name().map_err(drv)?;
        let sm_count = ctx
            .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(drv)? as u32;
        Ok(Self { ctx, stream, blas, functions, _modules: modules, name, sm_count })
    }

    pub(crate) fn function(&self, name: &'static str) -> &CudaFunction {
        // Every name in FUNCTIONS was checked present in `open`.
        &self.functions[name]
    }

    /// `(free, total)` device memory in bytes.
    pub fn mem_info(&self) -> Result<(usize, usize)> {
        self.ctx.mem_get_info().map_err(drv)
    }

    /// Uninitialised device buffer of `len` elements.
    pub fn alloc<T: DeviceRepr>(&self, len: usize) -> Result<CudaSlice<T>> {
        // SAFETY: every buffer the backend allocates is written (upload, kernel output or
        // memset) before it is read; the checks poison outputs to prove it.
        unsafe { self.stream.alloc::<T>(len.max(1)) }.map_err(drv)
    }

    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>> {
        if host.is_empty() {
            return self.alloc(1);
        }
        self.stream.clone_htod(host).map_err(drv)
    }

    /// Copies `host` into the start of `dst` (which must be at least as long).
    pub fn upload_into<T: DeviceRepr>(&self, host: &[T], dst: &mut CudaSlice<T>) -> Result<()> {
        if host.is_empty() {
            return Ok(());
        }
        assert!(dst.len() >= host.len(), "upload_into: {} > {}", host.len(), dst.len());
        let mut view = dst.slice_mut(..host.len());
        self.stream.memcpy_htod(host, &mut view).map_err(drv)
    }

    pub fn download<T: DeviceRepr + Default + Clone>(&self, src: &CudaSlice<T>, len: usize) -> Result<Vec<T>> {
        let mut out = vec![T::default(); len];
        if len > 0 {
            self.stream.memcpy_dtoh(&src.slice(..len), &mut out).map_err(drv)?;
        }
        Ok(out)
    }

    pub fn sync(&self) -> Result<()> {
        self.stream.synchronize().map_err(drv)
    }
}

/// Raw device address of a buffer, for the C parameter structs.
pub(crate) fn ptr<T>(dev: &Device, s: &CudaSlice<T>) -> u64 {
    // With event tracking off the SyncOnDrop guard records nothing.
    let (p, _guard) = s.device_ptr(&dev.stream);
    p
}

pub(crate) fn ptr_mut<T>(dev: &Device, s: &mut CudaSlice<T>) -> u64 {
    let (p, _guard) = s.device_ptr_mut(&dev.stream);
    p
}

/// [`ptr`] for code outside the backend that builds address tables (the benches'
/// `verify_chain_rows` case): the address is only valid while `s` lives.
pub fn raw_ptr<T>(dev: &Device, s: &CudaSlice<T>) -> u64 {
    ptr(dev, s)
}
