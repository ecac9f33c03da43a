//! Token embedding gather (bf16 table, f32 rows out) at the Llama-3-8B shape (vocabulary
//! 128256, hidden 4096), and the random bf16 fill that draws weights on the device for the
//! performance runs (`CudaBackend::random`), beside the device-to-device copy of the same run.
//! Bytes: the rows gathered (read as bf16, written as f32); the fill writes 2 bytes an element.
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
    let (vocab, hidden) = (128_256usize, 4096usize);
    let table = dev.upload(&common::rand_bf16(vocab * hidden, 1)).unwrap();
    let group = format!("cuda_{}", dev.name.replace(' ', "_"));
    for t in [1usize, 64, 4096] {
        let ids: Vec<u32> = (0..t as u32).map(|i| i.wrapping_mul(2_654_435_761) % vocab as u32).collect();
        let ids = dev.upload(&ids).unwrap();
        let mut out = dev.alloc::<f32>(t * hidden).unwrap();
        let bytes = (t * hidden * 6) as f64;
        let mut run = || ops::embedding(&dev, &ids, &table, &mut out, t, hidden).unwrap();
        common::report(&dev, "embedding", &format!("T={t} H={hidden}"), common::median_secs(&dev, 15, &mut run), bytes, ceiling);
        let mut g = c.benchmark_group(group.clone());
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function(format!("embedding/T={t}"), |b| b.iter_custom(|n| common::time(&dev, n, &mut run)));
        g.finish();
    }
    let mut buf = dev.alloc::<u16>(1 << 28).unwrap(); // 512 MiB of bf16
    let bytes = (buf.len() * 2) as f64;
    let mut seed = 0u64;
    let mut run = || {
        seed += 1;
        ops::fill_random_bf16(&dev, &mut buf, seed, 0.02, 0.0).unwrap()
    };
    common::report(&dev, "fill_random", "n=2^28 bf16", common::median_secs(&dev, 5, &mut run), bytes, ceiling);
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("fill_random/n=2^28", |b| b.iter_custom(|n| common::time(&dev, n, &mut run)));
    g.finish();
}

criterion_group! { name = benches; config = config(); targets = bench }
criterion_main!(benches);
