//! cuBLAS bf16 GEMM (f32 out) at Llama-3-8B projection shapes: batch-1 decode is a
//! bandwidth-bound matrix-vector product (GB/s of weights); the 4096-token case is compute
//! bound and is reported in TFLOP/s as well. Beside each decode-sized case, the fused GEMV
//! kernel (`csrc/gemv.cu`, plain bf16 input and f32 output) on the same shapes, plus the 8B LM
//! head and the 1B projections.
//!
//! Then the token counts a verify or draft forward has under load (16–640 rows: 32–128
//! sequences at L + 1 = 1–5, plus riding prefill), at every 8B and 1B projection shape, each
//! against its own floor: the larger of the bytes over the copy rate and the FLOPs over the
//! bf16 GEMM rate measured in the same run (cuBLAS at 8192³). Printed only (no criterion
//! group), since these are many cases of milliseconds in all.
#[path = "common.rs"]
mod common;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use verify_pd::backend::cuda::gemv::{gemv, GemvIn, GemvOut};
use verify_pd::backend::cuda::ops;

fn config() -> Criterion {
    Criterion::default().sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1))
}

fn bench(c: &mut Criterion) {
    let Some(dev) = common::open() else { return };
    let ceiling = common::copy_gbps(&dev);
    for &(t, din, dout) in &[(1usize, 4096usize, 6144usize), (1, 4096, 28672), (1, 14336, 4096), (64, 4096, 28672), (4096, 4096, 28672)] {
        let x = dev.upload(&common::rand_bf16(t * din, 1)).unwrap();
        let w = dev.upload(&common::rand_bf16(din * dout, 2)).unwrap();
        let mut y = dev.alloc::<f32>(t * dout).unwrap();
        let bytes = (din * dout * 2 + t * din * 2 + t * dout * 4) as f64;
        let mut run = || ops::gemm(&dev, &x, &w, 0, &mut y, t, din, dout, 0.0).unwrap();
        let s = common::median_secs(&dev, 15, &mut run);
        common::report(&dev, "gemm", &format!("T={t} {din}->{dout}"), s, bytes, ceiling);
        println!("{:>60} {:.1} TFLOP/s", "", 2.0 * (t * din * dout) as f64 / s / 1e12);
        let mut g = c.benchmark_group(format!("cuda_{}", dev.name.replace(' ', "_")));
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function(format!("gemm/T={t}/{din}x{dout}"), |b| b.iter_custom(|n| common::time(&dev, n, &mut run)));
        g.finish();
    }
    let shapes = [(4096usize, 6144usize), (4096, 4096), (4096, 28672), (14336, 4096), (4096, 128256), (2048, 3072), (2048, 16384), (8192, 2048)];
    for &t in &[1usize, 2, 4] {
        for &(din, dout) in &shapes {
            let x = dev.upload(&common::rand_bf16(t * din, 1)).unwrap();
            let w = dev.upload(&common::rand_bf16(din * dout, 2)).unwrap();
            let mut y = dev.alloc::<f32>(t * dout).unwrap();
            let bytes = (din * dout * 2 + t * din * 2 + t * dout * 4) as f64;
            let mut run = || gemv(&dev, GemvIn::Bf16(&x), &w, GemvOut::F32 { y: &mut y, beta: 0.0 }, t, din, dout).unwrap();
            let s = common::median_secs(&dev, 15, &mut run);
            common::report(&dev, "gemv", &format!("T={t} {din}->{dout}"), s, bytes, ceiling);
            let mut run = || ops::gemm(&dev, &x, &w, 0, &mut y, t, din, dout, 0.0).unwrap();
            let s = common::median_secs(&dev, 15, &mut run);
            common::report(&dev, "gemm", &format!("T={t} {din}->{dout}"), s, bytes, ceiling);
        }
    }
    verify_sizes(&dev, ceiling, &shapes);
}

/// cuBLAS at the row counts of loaded verify and draft forwards, against max(byte floor, FLOP
/// floor) with both rates measured here.
fn verify_sizes(dev: &verify_pd::backend::cuda::Device, ceiling: f64, shapes: &[(usize, usize)]) {
    let tflops = common::gemm_tflops(dev);
    println!("{} gemm rate 8192^3 (bf16 in, f32 out): {tflops:.0} TFLOP/s; copy {ceiling:.0} GB/s", dev.name);
    for &(din, dout) in shapes {
        let w = dev.upload(&common::rand_bf16(din * dout, 2)).unwrap();
        for &t in &[16usize, 32, 64, 96, 128, 192, 256, 384, 640] {
            let x = dev.upload(&common::rand_bf16(t * din, 1)).unwrap();
            let mut y = dev.alloc::<f32>(t * dout).unwrap();
            let bytes = (din * dout * 2 + t * din * 2 + t * dout * 4) as f64;
            let flops = 2.0 * (t * din * dout) as f64;
            let floor = (bytes / (ceiling * 1e9)).max(flops / (tflops * 1e12));
            let s = common::median_secs(dev, 9, || ops::gemm(dev, &x, &w, 0, &mut y, t, din, dout, 0.0).unwrap());
            println!(
                "{} gemm-sweep T={t:<4} {din:>5}->{dout:<6} {:>9.2} us  floor {:>8.2} us  {:>5.1}% of floor",
                dev.name,
                s * 1e6,
                floor * 1e6,
                100.0 * floor / s
            );
        }
    }
}

criterion_group! { name = benches; config = config(); targets = bench }
criterion_main!(benches);
