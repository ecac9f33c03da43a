//! Shared by the CUDA benches: opens the device (or says why not, so that `cargo bench` on a
//! machine without a GPU skips cleanly), times launches with device events, and measures the
//! ceiling they are compared with, a device-to-device copy, in the same run.
#![allow(dead_code)]
use std::time::Duration;

use cudarc::driver::CudaSlice;
use verify_pd::backend::cuda::Device;

pub fn open() -> Option<Device> {
    match Device::open(0) {
        Ok(d) => {
            eprintln!("device: {} ({} SMs)", d.name, d.sm_count);
            Some(d)
        }
        Err(e) => {
            eprintln!("skipping CUDA benches: {e}");
            None
        }
    }
}

/// Device time of `iters` back-to-back runs of `f`, between two events on the stream.
pub fn time(dev: &Device, iters: u64, mut f: impl FnMut()) -> Duration {
    let start = dev.ctx.new_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT)).expect("event");
    let end = dev.ctx.new_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT)).expect("event");
    start.record(&dev.stream).expect("record");
    for _ in 0..iters {
        f();
    }
    end.record(&dev.stream).expect("record");
    end.synchronize().expect("sync");
    Duration::from_secs_f64(f64::from(start.elapsed_ms(&end).expect("elapsed")) / 1e3)
}

/// Median seconds of one run of `f` over `reps` timed batches of 20 runs, after a warm-up.
pub fn median_secs(dev: &Device, reps: usize, mut f: impl FnMut()) -> f64 {
    time(dev, 5, &mut f);
    let mut v: Vec<f64> = (0..reps).map(|_| time(dev, 20, &mut f).as_secs_f64() / 20.0).collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Device-to-device copy bandwidth in GB/s (bytes read plus bytes written), 1 GiB buffers.
pub fn copy_gbps(dev: &Device) -> f64 {
    let n = 1usize << 29; // u16 elements: 1 GiB
    let src: CudaSlice<u16> = dev.stream.alloc_zeros(n).expect("alloc");
    let mut dst: CudaSlice<u16> = dev.stream.alloc_zeros(n).expect("alloc");
    let s = median_secs(dev, 5, || dev.stream.memcpy_dtod(&src, &mut dst).expect("copy"));
    2.0 * (n * 2) as f64 / s / 1e9
}

/// bf16 GEMM rate in TFLOP/s (cuBLAS as the engine calls it, f32 out) at 8192³: the compute
/// ceiling beside the copy one.
pub fn gemm_tflops(dev: &Device) -> f64 {
    let n = 8192usize;
    let a = dev.upload(&rand_bf16(n * n, 1)).expect("upload");
    let b = dev.upload(&rand_bf16(n * n, 2)).expect("upload");
    let mut c = dev.alloc::<f32>(n * n).expect("alloc");
    let s = median_secs(dev, 5, || verify_pd::backend::cuda::ops::gemm(dev, &a, &b, 0, &mut c, n, n, n, 0.0).expect("gemm"));
    2.0 * (n * n * n) as f64 / s / 1e12
}

/// Prints one line: the op, its size, time, achieved GB/s and the share of the copy ceiling.
pub fn report(dev: &Device, op: &str, size: &str, secs: f64, bytes: f64, ceiling: f64) {
    let gbps = bytes / secs / 1e9;
    println!(
        "{} {op:<12} {size:<40} {:>9.2} us {:>8.0} GB/s {:>5.1}% of copy ({ceiling:.0} GB/s)",
        dev.name,
        secs * 1e6,
        gbps,
        100.0 * gbps / ceiling
    );
}

/// Random bf16 (as bits) in [-1, 1).
pub fn rand_bf16(n: usize, seed: u64) -> Vec<u16> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            half::bf16::from_f32(((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0).to_bits()
        })
        .collect()
}

pub fn rand_f32(n: usize, seed: u64) -> Vec<f32> {
    rand_bf16(n, seed).into_iter().map(|b| half::bf16::from_bits(b).to_f32()).collect()
}

/// Runs `f` once inside a profiler range when `VPD_PROFILE` names `case` (for
/// `ncu --profile-from-start off`, which then profiles only the kernels `f` launches on
/// `stream`).
pub fn profile_once(stream: &cudarc::driver::CudaStream, case: &str, mut f: impl FnMut()) {
    if std::env::var("VPD_PROFILE").ok().as_deref() != Some(case) {
        return;
    }
    stream.synchronize().expect("sync");
    // SAFETY: plain driver calls on the current context, no pointers passed.
    unsafe { cudarc::driver::sys::cuProfilerStart() };
    f();
    stream.synchronize().expect("sync");
    // SAFETY: as above.
    unsafe { cudarc::driver::sys::cuProfilerStop() };
}
