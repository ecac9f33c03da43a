//! RoPE on q and k fused with the paged K/V write, Llama-3-8B heads (32/8, D 128).
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
    let shape = ops::HeadShape { n_heads: 32, n_kv_heads: 8, head_dim: 128 };
    let inv = dev.upload(&verify_pd::make_model::Preset::Llama3_8b.config().rope_inv_freq()).unwrap();
    for t in [1usize, 64, 1024] {
        let mut cache = ops::KvCache::new(&dev, 1, t.div_ceil(16), 16, shape.kv_dim()).unwrap();
        let mut qkv = dev.upload(&common::rand_f32(t * shape.qkv_dim(), 1)).unwrap();
        let pos = dev.upload(&(0..t as i32).collect::<Vec<_>>()).unwrap();
        let slots = dev.upload(&(0..t as u32).collect::<Vec<_>>()).unwrap();
        // q and k read and written in f32, v read; k and v written in bf16.
        let bytes = (t * ((shape.q_dim() + shape.kv_dim()) * 8 + shape.kv_dim() * 4 + shape.kv_dim() * 4)) as f64;
        let mut run = || ops::rope_kv(&dev, &mut qkv, &pos, &slots, &inv, &mut cache, 0, shape, t).unwrap();
        common::report(&dev, "rope_kv", &format!("T={t} 32/8x128"), common::median_secs(&dev, 15, &mut run), bytes, ceiling);
        let mut g = c.benchmark_group(format!("cuda_{}", dev.name.replace(' ', "_")));
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function(format!("rope_kv/T={t}"), |b| b.iter_custom(|n| common::time(&dev, n, &mut run)));
        g.finish();
    }
}

criterion_group! { name = benches; config = config(); targets = bench }
criterion_main!(benches);
