//! Paged K/V slot copies in every layer (copy-on-write blocks, tree compaction) at the
//! Llama-3-8B cache shape (32 layers, 8 KV heads of 128, bf16), beside the device-to-device
//! copy of the same run. Bytes: each pair's K and V rows read and written in every layer. The
//! time includes the upload of the slot lists, as `Backend::copy_blocks` pays it.
#[path = "common.rs"]
mod common;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use verify_pd::backend::cuda::ops::{self, KvCache};

fn config() -> Criterion {
    Criterion::default().sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1))
}

fn bench(c: &mut Criterion) {
    let Some(dev) = common::open() else { return };
    let ceiling = common::copy_gbps(&dev);
    let (layers, blocks, bs, kv_dim) = (32usize, 512usize, 16usize, 1024usize);
    let mut cache = KvCache::new(&dev, layers, blocks, bs, kv_dim).unwrap();
    let group = format!("cuda_{}", dev.name.replace(' ', "_"));
    // 4: a tree path compacted; 16: one copy-on-write block; 1024: 64 blocks.
    for pairs in [4usize, 16, 1024] {
        let src: Vec<u32> = (0..pairs as u32).collect();
        let dst: Vec<u32> = (0..pairs as u32).map(|i| (blocks * bs) as u32 - 1 - i).collect();
        let bytes = (pairs * layers * 2 * kv_dim * 2 * 2) as f64;
        let mut run = || ops::kv_copy(&dev, &mut cache, &src, &dst).unwrap();
        common::report(&dev, "kv_copy", &format!("pairs={pairs} layers={layers} kv_dim={kv_dim}"), common::median_secs(&dev, 15, &mut run), bytes, ceiling);
        let mut g = c.benchmark_group(group.clone());
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function(format!("kv_copy/pairs={pairs}"), |b| b.iter_custom(|n| common::time(&dev, n, &mut run)));
        g.finish();
    }
}

criterion_group! { name = benches; config = config(); targets = bench }
criterion_main!(benches);
