//! SwiGLU over the fused gate|up output (f32 in, bf16 out), ff 14336 (Llama-3-8B).
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
    let ff = 14336;
    for t in [1usize, 64, 1024] {
        let gu = dev.upload(&common::rand_f32(t * 2 * ff, 1)).unwrap();
        let mut out = dev.alloc::<u16>(t * ff).unwrap();
        let bytes = (t * ff * 10) as f64;
        let mut run = || ops::swiglu(&dev, &gu, &mut out, t, ff).unwrap();
        common::report(&dev, "swiglu", &format!("T={t} ff={ff}"), common::median_secs(&dev, 15, &mut run), bytes, ceiling);
        let mut g = c.benchmark_group(format!("cuda_{}", dev.name.replace(' ', "_")));
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function(format!("swiglu/T={t}"), |b| b.iter_custom(|n| common::time(&dev, n, &mut run)));
        g.finish();
    }
}

criterion_group! { name = benches; config = config(); targets = bench }
criterion_main!(benches);
