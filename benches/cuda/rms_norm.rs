//! RMSNorm (f32 residual in, bf16 out) at decode and prefill row counts, hidden 4096.
#[path = "common.rs"]
mod common;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use verify_pd::backend::cuda::ops;

fn config() -> Criterion {
    Criterion::default().sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1))
}

fn bench(c: &mut Criterion) {
    let Some(dev) = common::open() else { return };
    let ceiling = common::copy_gbps(&dev);
    let d = 4096;
    for rows in [1usize, 64, 4096] {
        let mut res = dev.upload(&common::rand_f32(rows * d, 1)).unwrap();
        let w = dev.upload(&common::rand_bf16(d, 2)).unwrap();
        let mut out = dev.alloc::<u16>(rows * d).unwrap();
        let bytes = (rows * d * 6 + d * 2) as f64;
        let mut run = || ops::rms_norm(&dev, None, &mut res, &w, &mut out, None, rows, d, 1e-5).unwrap();
        common::report(&dev, "rms_norm", &format!("rows={rows} dim={d}"), common::median_secs(&dev, 15, &mut run), bytes, ceiling);
        let mut g = c.benchmark_group(format!("cuda_{}", dev.name.replace(' ', "_")));
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function(format!("rms_norm/rows={rows}"), |b| b.iter_custom(|n| common::time(&dev, n, &mut run)));
        g.finish();
    }
}

criterion_group! { name = benches; config = config(); targets = bench }
criterion_main!(benches);
