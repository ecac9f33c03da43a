//! Per-lane execution contexts: the decode, verify and prefill lanes of one GPU, each a stream
//! with its own priority, and — where the driver allows — the decode lane on its own SM
//! partition (a CUDA green context) and verify and prefill sharing the other SMs.
//!
//! Why partitions: stream priorities act per thread block, so a cuBLAS GEMM or a long prefill
//! kernel that holds SMs still delays the decode step whatever its priority (shared
//! ALGORITHMS.md, "Isolating the decode lane on one GPU"). Green contexts are created with the
//! driver API (`cuDevSmResourceSplitByCount`, `cuDevResourceGenerateDesc`, `cuGreenCtxCreate`,
//! `cuGreenCtxStreamCreate`), following the CUDA programming guide's green-context section.
//! When they are not available (a driver older than CUDA 12.4, MIG, any failure), [`Lanes::new`]
//! falls back to plain streams with priorities and says so in [`Lanes::isolation`].
//!
//! Using a lane: [`CudaBackend::bind_lane`] points the backend's stream and cuBLAS handle at the
//! lane; steps prepared, launched, captured and replayed after that run there (a graph replays
//! on the stream it was captured on, so capture after binding). Each backend has its own cuBLAS
//! handle (one per [`Device`](super::Device)), re-bound to the lane's stream.
//!
//! Resizing: a partition's size is fixed when it is made. To resize between steps, make a new
//! [`Lanes`] (about 2 ms on an H200; the isolation bench prints it) or keep a few sizes made up
//! front, and re-bind. Binding synchronises the old stream and drops the workspace, so graphs
//! captured before must be captured again. A backend keeps every lane it was bound to alive
//! until it is dropped, because buffers it allocated there are freed on that lane's stream.
//!
//! Measured (docs/perf.md, "Lane isolation", H200): a 1B-shape draft step under a concurrent
//! 8B prefill chunk takes 2.84× its whole-GPU time with priorities alone, 1.20× with 80 decode
//! SMs; under a concurrent verify step 2.24× and 1.29× (verify shares HBM bandwidth).
#![allow(unsafe_code)]
use std::sync::Arc;

use cudarc::driver::{sys, CudaContext, CudaStream};

use super::device::{drv, Device};
use super::CudaBackend;
use crate::error::{EngineError, Result};

mod green;
use green::GreenCtx;
pub use green::SmRules;

/// How the lanes are kept apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Isolation {
    /// Green contexts: decode on `decode_sms` SMs, verify and prefill on the other `rest_sms`.
    GreenContexts { decode_sms: u32, rest_sms: u32 },
    /// Plain streams with priorities on the whole GPU; `reason` says why not green contexts.
    StreamPriorities { reason: String },
    /// Decode and verify on the whole GPU (plain streams, highest and middle priority); prefill
    /// confined to a green context of `prefill_sms` SMs while they have work, and on the whole
    /// GPU ([`Lanes::prefill_whole`]) while they have none.
    ConfinedPrefill { prefill_sms: u32, total_sms: u32 },
}

/// One lane: a stream with a priority, on an SM partition or on the whole device.
#[derive(Debug)]
pub struct Lane {
    name: &'static str,
    stream: sys::CUstream,
    priority: i32,
    sm_count: u32,
    cu_device: sys::CUdevice,
    /// Keeps the partition alive while this lane's stream exists (dropped after the stream).
    green: Option<Arc<GreenCtx>>,
    /// The context the stream was made in (plain streams), kept alive for the same reason.
    _ctx: Arc<CudaContext>,
}

// SAFETY: a CUstream is a driver handle usable from any thread; the lane only hands out
// borrowed wrappers of it and destroys it once, in Drop.
unsafe impl Send for Lane {}
// SAFETY: as above; shared access only reads the handle.
unsafe impl Sync for Lane {}

impl Lane {
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The stream priority (lower is higher, from `cuCtxGetStreamPriorityRange`).
    pub fn priority(&self) -> i32 {
        self.priority
    }

    /// SMs its kernels may run on: the partition, or the whole device without green contexts.
    pub fn sm_count(&self) -> u32 {
        self.sm_count
    }

    pub fn is_partitioned(&self) -> bool {
        self.green.is_some()
    }

    /// A cudarc wrapper of the lane's stream for a context of the same device.
    fn wrap(&self, ctx: &Arc<CudaContext>) -> Result<Arc<CudaStream>> {
        if ctx.cu_device() != self.cu_device {
            return Err(EngineError::Backend(format!(
                "lane `{}` belongs to device {}, the backend to device {}",
                self.name,
                self.cu_device,
                ctx.cu_device()
            )));
        }
        // SAFETY: the stream belongs to this device's primary context or to a green context of
        // it, which shares the primary context's memory and modules. It stays alive while any
        // backend holds an `Arc<Lane>` of it, and every backend bound to it keeps one until it
        // is dropped (`Bound::held`). Ordering with other streams is the binder's job: binding
        // synchronises the previous stream.
        Ok(unsafe { ctx.wrap_borrowed_stream(self.stream) })
    }

    /// Waits for everything queued on the lane.
    ///
    /// # Errors
    /// A driver failure of earlier work.
    pub fn synchronize(&self) -> Result<()> {
        // SAFETY: the stream is live until Drop.
        green::check("cuStreamSynchronize", unsafe { sys::cuStreamSynchronize(self.stream) })
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        // SAFETY: the stream was created for this lane, is destroyed only here, and nothing
        // uses it any more: every wrapper is held by a backend that also holds this lane.
        let r = unsafe { sys::cuStreamDestroy_v2(self.stream) };
        if let Err(e) = green::check("cuStreamDestroy", r) {
            tracing::warn!("lane {}: {e}", self.name);
        }
        // `green` drops after this: the partition outlives its stream.
    }
}

/// The three lanes of one GPU, highest priority first.
#[derive(Debug)]
pub struct Lanes {
    pub decode: Arc<Lane>,
    pub verify: Arc<Lane>,
    pub prefill: Arc<Lane>,
    /// With [`Isolation::ConfinedPrefill`]: the prefill lane's stream on the whole GPU, for
    /// when decode and verify have nothing to run.
    pub prefill_whole: Option<Arc<Lane>>,
    pub isolation: Isolation,
}

/// `(decode, verify, prefill)` priorities from the device's range: highest, middle, lowest.
fn priorities(ctx: &Arc<CudaContext>) -> Result<(i32, i32, i32)> {
    ctx.bind_to_thread().map_err(drv)?;
    let (least, greatest) = cudarc::driver::result::stream::get_priority_range().map_err(drv)?;
    Ok((greatest, (least + greatest) / 2, least))
}

impl Lanes {
    /// Green-context lanes if this driver and device allow them, else plain streams with
    /// priorities; [`Lanes::isolation`] says which, and why not green contexts.
    ///
    /// # Errors
    /// An invalid `decode_sms` (see [`SmRules::check_decode`]) is an error, not a fallback;
    /// so is a failure to create even plain streams.
    pub fn new(dev: &Device, decode_sms: u32) -> Result<Self> {
        match Self::green(dev, decode_sms) {
            Ok(l) => Ok(l),
            Err(e @ EngineError::InvalidRequest { .. }) => Err(e),
            Err(e) => Self::streams(dev, format!("green contexts unavailable: {e}")),
        }
    }

    /// Decode on a green context of `decode_sms` SMs, verify and prefill on a green context of
    /// the remaining SMs.
    ///
    /// # Errors
    /// A driver without green contexts (older than CUDA 12.4), a MIG instance or any other
    /// driver refusal ([`EngineError::Backend`], naming the call), or an invalid size
    /// ([`EngineError::InvalidRequest`] on `decode_sms`, naming the valid sizes).
    pub fn green(dev: &Device, decode_sms: u32) -> Result<Self> {
        let ctx = &dev.ctx;
        let cu_device = ctx.cu_device();
        let (whole, rules) = whole_device(dev)?;
        rules.check_decode(decode_sms)?;
        let (part, rest) = green::split(&whole, decode_sms)?;
        let (decode_ctx, rest_ctx) =
            (Arc::new(GreenCtx::new(cu_device, &part)?), Arc::new(GreenCtx::new(cu_device, &rest)?));
        let (p_dec, p_ver, p_pre) = priorities(ctx)?;
        let rest_sms = green::sm_count(&rest);
        let lane = |name, g: &Arc<GreenCtx>, priority, sm_count| -> Result<Arc<Lane>> {
            Ok(Arc::new(Lane {
                name,
                stream: g.stream(priority)?,
                priority,
                sm_count,
                cu_device,
                green: Some(g.clone()),
                _ctx: ctx.clone(),
            }))
        };
        Ok(Self {
            decode: lane("decode", &decode_ctx, p_dec, decode_sms)?,
            verify: lane("verify", &rest_ctx, p_ver, rest_sms)?,
            prefill: lane("prefill", &rest_ctx, p_pre, rest_sms)?,
            prefill_whole: None,
            isolation: Isolation::GreenContexts { decode_sms, rest_sms },
        })
    }

    /// Decode and verify on plain streams over the whole GPU, which they take in turns when
    /// requests gather (a draft batch, then its verify forward); prefill, which runs beside
    /// them, on a green context of `prefill_sms` SMs, so that a chunk's GEMMs cannot hold
    /// every SM; and a whole-GPU prefill stream for when nothing else runs
    /// ([`CudaBackend::confine`] switches between the two). Every stream takes its lane's
    /// priority; the primary context's streams may still use the partition's SMs.
    ///
    /// # Errors
    /// As [`Lanes::green`] (no green contexts, an invalid size).
    pub fn confined_prefill(dev: &Device, prefill_sms: u32) -> Result<Self> {
        let ctx = &dev.ctx;
        let cu_device = ctx.cu_device();
        let (whole, rules) = whole_device(dev)?;
        rules.check_decode(prefill_sms).map_err(|e| match e {
            EngineError::InvalidRequest { detail, .. } => EngineError::InvalidRequest { field: "prefill_sms", detail },
            e => e,
        })?;
        let (part, _) = green::split(&whole, prefill_sms)?;
        let g = Arc::new(GreenCtx::new(cu_device, &part)?);
        let plain = Self::streams(dev, "")?;
        let confined = Arc::new(Lane {
            name: "prefill",
            stream: g.stream(plain.prefill.priority)?,
            priority: plain.prefill.priority,
            sm_count: prefill_sms,
            cu_device,
            green: Some(g),
            _ctx: ctx.clone(),
        });
        Ok(Self {
            decode: plain.decode,
            verify: plain.verify,
            prefill: confined,
            prefill_whole: Some(plain.prefill),
            isolation: Isolation::ConfinedPrefill { prefill_sms, total_sms: dev.sm_count },
        })
    }

    /// Plain non-blocking streams with the highest, middle and lowest priority, all on the
    /// whole device; `reason` is recorded in [`Lanes::isolation`].
    ///
    /// # Errors
    /// A driver failure creating the streams.
    pub fn streams(dev: &Device, reason: impl Into<String>) -> Result<Self> {
        let ctx = &dev.ctx;
        let (p_dec, p_ver, p_pre) = priorities(ctx)?;
        let lane = |name, priority| -> Result<Arc<Lane>> {
            let stream = cudarc::driver::result::stream::create_with_priority(
                cudarc::driver::result::stream::StreamKind::NonBlocking,
                priority,
            )
            .map_err(drv)?;
            Ok(Arc::new(Lane {
                name,
                stream,
                priority,
                sm_count: dev.sm_count,
                cu_device: ctx.cu_device(),
                green: None,
                _ctx: ctx.clone(),
            }))
        };
        Ok(Self {
            decode: lane("decode", p_dec)?,
            verify: lane("verify", p_ver)?,
            prefill: lane("prefill", p_pre)?,
            prefill_whole: None,
            isolation: Isolation::StreamPriorities { reason: reason.into() },
        })
    }

    /// The partition sizes of a device (its [`SmRules`]), to pick `decode_sms`.
    ///
    /// # Errors
    /// As [`Lanes::green`] for a driver without green contexts.
    pub fn sm_rules(dev: &Device) -> Result<SmRules> {
        Ok(whole_device(dev)?.1)
    }
}

/// The device's whole SM resource and its partition rules, once the driver is known to have
/// green contexts.
fn whole_device(dev: &Device) -> Result<(sys::CUdevResource, SmRules)> {
    if let Some(sym) = green::missing_symbol() {
        return Err(EngineError::Backend(format!(
            "the CUDA driver lacks `{sym}` (green contexts need a CUDA 12.4 or newer driver)"
        )));
    }
    let (major, _) = dev.ctx.compute_capability().map_err(drv)?;
    dev.ctx.bind_to_thread().map_err(drv)?;
    green::device_sms(dev.ctx.cu_device(), major)
}

/// A backend's lane state: the lane it runs on now, its own stream from before the first bind,
/// and every lane it has run on (kept alive, see the module header).
#[derive(Default)]
pub(crate) struct Bound {
    current: Option<Arc<Lane>>,
    home: Option<(Arc<CudaStream>, u32)>,
    held: Vec<Arc<Lane>>,
}

impl CudaBackend {
    /// Runs this backend's steps on `lane` from now on: its stream and cuBLAS handle move there,
    /// and the attention split heuristic sees the lane's SM count.
    ///
    /// Synchronises the previous stream, drops the step workspace (allocated on that stream) and
    /// invalidates graphs captured before: capture again after binding.
    ///
    /// # Errors
    /// A lane of another device, or a driver/cuBLAS failure (the backend stays on its old stream).
    pub fn bind_lane(&mut self, lane: &Arc<Lane>) -> Result<()> {
        let stream = lane.wrap(&self.dev.ctx)?;
        self.switch_stream(stream, lane.sm_count)?;
        if !self.lanes.held.iter().any(|l| Arc::ptr_eq(l, lane)) {
            self.lanes.held.push(lane.clone());
        }
        self.lanes.current = Some(lane.clone());
        Ok(())
    }

    /// Back to the backend's own stream on the whole device (no-op if never bound).
    ///
    /// # Errors
    /// As [`CudaBackend::bind_lane`].
    pub fn unbind_lane(&mut self) -> Result<()> {
        let Some((stream, sms)) = self.lanes.home.clone() else { return Ok(()) };
        self.switch_stream(stream, sms)?;
        self.lanes.current = None;
        Ok(())
    }

    /// The lane this backend runs on, if any.
    pub fn lane(&self) -> Option<&Arc<Lane>> {
        self.lanes.current.as_ref()
    }

    fn switch_stream(&mut self, stream: Arc<CudaStream>, sm_count: u32) -> Result<()> {
        self.dev.ctx.bind_to_thread().map_err(drv)?;
        self.dev.sync()?;
        if self.lanes.home.is_none() {
            self.lanes.home = Some((self.dev.stream.clone(), self.dev.sm_count));
        }
        // SAFETY: the previous stream was synchronised just above and this backend queues work
        // on one stream at a time, so no kernel of the handle runs concurrently with the switch.
        unsafe { self.dev.blas.set_stream(stream.clone()) }.map_err(super::device::blas)?;
        self.ws = None; // allocated on the old stream, which is idle now
        self.ws_generation += 1;
        self.dev.stream = stream;
        self.dev.sm_count = sm_count;
        Ok(())
    }
}

impl Drop for CudaBackend {
    fn drop(&mut self) {
        // Buffers are freed asynchronously on the stream they were allocated on (the home
        // stream for weights and cache); work still queued on a lane may read them, so wait
        // for the lane first. The lanes themselves drop last (`lanes` is the last field).
        if self.lanes.current.is_some() {
            if let Err(e) = self.dev.sync() {
                tracing::warn!("CudaBackend drop: {e}");
            }
        }
    }
}
