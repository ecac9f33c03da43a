//! Paged attention, Llama-3-8B heads (32/8, D 128), bf16 K/V in 16-token blocks. Decode:
//! batch x context, with the split-K factor the backend picks, on the tensor-core kernel (the
//! one the backend runs for this shape), the CUDA-core GQA kernel and the generic one.
//! Verification: batch x context x (L + 1) chain tokens a sequence, on the tensor-core kernel
//! with query tiles (what the backend runs) and with one token a warp. Bytes are the K/V of
//! every sequence read once (the floor).
#[path = "common.rs"]
mod common;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use verify_pd::backend::cuda::ops;

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}

fn bench(c: &mut Criterion) {
    let Some(dev) = common::open() else { return };
    let ceiling = common::copy_gbps(&dev);
    let shape = ops::HeadShape { n_heads: 32, n_kv_heads: 8, head_dim: 128 };
    for &(batch, ctx) in &[(1usize, 4096usize), (1, 32768), (32, 2048), (32, 4096), (64, 1024)] {
        let Setup { meta, mut cache, q, mut out, bytes, .. } = setup(&dev, shape, batch, ctx, 1);
        for path in [ops::AttnPath::Mma, ops::AttnPath::Gqa, ops::AttnPath::Generic] {
            let splits = match path {
                ops::AttnPath::Mma | ops::AttnPath::MmaPerToken | ops::AttnPath::Gqa => {
                    ops::attn_splits_for(path, batch, shape, ctx + 1, dev.sm_count as usize)
                }
                // The generic kernel's own rule (blocks per query head, 2 per SM).
                ops::AttnPath::Generic => (2 * dev.sm_count as usize)
                    .div_ceil(batch * shape.n_heads)
                    .min((ctx + 1).div_ceil(128))
                    .clamp(1, 64),
            };
            let mut partial = dev.alloc::<f32>(splits * batch * shape.n_heads * (shape.head_dim + 2)).unwrap();
            if path == ops::AttnPath::Mma && batch > 1 {
                // The split count against one wave of resident blocks (what attn_splits picks).
                for other in [1usize, 2, 3, 4, 5, 6, 8].into_iter().filter(|&k| k != splits) {
                    let mut partial = dev.alloc::<f32>(other * batch * shape.n_heads * (shape.head_dim + 2)).unwrap();
                    let mut run = || {
                        ops::paged_attn_on(&dev, &q, shape.q_dim(), &mut cache, 0, &meta, shape, &mut out, &mut partial, other, path)
                            .unwrap()
                    };
                    let size = format!("batch={batch} ctx={ctx} splits={other} (sweep)");
                    common::report(&dev, "attn_mma", &size, common::median_secs(&dev, 15, &mut run), bytes, ceiling);
                }
            }
            let mut run = || {
                ops::paged_attn_on(
                    &dev,
                    &q,
                    shape.q_dim(),
                    &mut cache,
                    0,
                    &meta,
                    shape,
                    &mut out,
                    &mut partial,
                    splits,
                    path,
                )
                .unwrap()
            };
            let tag = match path {
                ops::AttnPath::Mma | ops::AttnPath::MmaPerToken => "attn_mma",
                ops::AttnPath::Gqa => "attn_gqa",
                ops::AttnPath::Generic => "attn_generic",
            };
            common::profile_once(&dev.stream, &format!("{tag}/{batch}x{ctx}"), &mut run);
            let size = format!("batch={batch} ctx={ctx} splits={splits}");
            common::report(&dev, tag, &size, common::median_secs(&dev, 15, &mut run), bytes, ceiling);
            if path == ops::AttnPath::Mma {
                let mut g = c.benchmark_group(format!("cuda_{}", dev.name.replace(' ', "_")));
                g.throughput(Throughput::Bytes(bytes as u64));
                g.bench_function(format!("paged_attn/b={batch}/ctx={ctx}"), |b| {
                    b.iter_custom(|n| common::time(&dev, n, &mut run))
                });
                g.finish();
            }
        }
    }

    // Verification of L + 1 = 5 tokens a sequence: query tiles against one token a warp.
    for &(batch, ctx) in &[(1usize, 4096usize), (32, 1024), (64, 1024), (128, 512)] {
        let n = 5;
        let Setup { flat, meta, mut cache, q, mut out, bytes } = setup(&dev, shape, batch, ctx, n);
        let t = batch * n;
        for path in [ops::AttnPath::Mma, ops::AttnPath::MmaPerToken] {
            // Each with the split rule the backend would apply to it.
            let splits = match path {
                ops::AttnPath::Mma => ops::step_splits(&flat, shape, dev.sm_count as usize, true),
                _ => ops::attn_splits_for(path, t, shape, ctx + n, dev.sm_count as usize),
            };
            let mut partial = dev.alloc::<f32>(splits * t * shape.n_heads * (shape.head_dim + 2)).unwrap();
            let mut run = || {
                ops::paged_attn_on(&dev, &q, shape.q_dim(), &mut cache, 0, &meta, shape, &mut out, &mut partial, splits, path)
                    .unwrap()
            };
            let tag = if path == ops::AttnPath::Mma { "attn_verify_tiles" } else { "attn_verify_per_token" };
            let size = format!("batch={batch} ctx={ctx} tokens={n} splits={splits}");
            common::report(&dev, tag, &size, common::median_secs(&dev, 15, &mut run), bytes, ceiling);
        }
    }
}

/// A step of `batch` sequences with `ctx` cached positions and `n` new chain tokens each,
/// its K/V cache filled at random.
struct Setup {
    flat: verify_pd::backend::cuda::plan::FlatPlan,
    meta: ops::AttnMeta,
    cache: ops::KvCache,
    q: cudarc::driver::CudaSlice<f32>,
    out: cudarc::driver::CudaSlice<u16>,
    /// K/V of every sequence read once.
    bytes: f64,
}

fn setup(dev: &verify_pd::backend::cuda::device::Device, shape: ops::HeadShape, batch: usize, ctx: usize, n: usize) -> Setup {
    let bs = 16;
    let blocks_per = (ctx + n).div_ceil(bs);
    let plan = verify_pd::backend::StepPlan {
        seqs: (0..batch)
            .map(|s| verify_pd::backend::SeqStep {
                tokens: vec![1; n],
                start_pos: ctx,
                block_table: ((s * blocks_per) as u32..((s + 1) * blocks_per) as u32).collect(),
                tree_parents: None,
                logits: verify_pd::backend::LogitsWanted::Last,
            })
            .collect(),
    };
    let nb = batch * blocks_per;
    let f = verify_pd::backend::cuda::plan::FlatPlan::build(&plan, nb, bs, 2).unwrap();
    let meta = ops::AttnMeta::upload(dev, &f).unwrap();
    let mut cache = ops::KvCache::new(dev, 1, nb, bs, shape.kv_dim()).unwrap();
    let fill = common::rand_bf16(cache.buf.len(), 3);
    dev.upload_into(&fill, cache.unshared_buf().unwrap()).unwrap();
    let q = dev.upload(&common::rand_f32(batch * n * shape.q_dim(), 1)).unwrap();
    let out = dev.alloc::<u16>(batch * n * shape.q_dim()).unwrap();
    let bytes = (batch * (ctx + n) * shape.kv_dim() * 2 * 2) as f64;
    Setup { flat: f, meta, cache, q, out, bytes }
}

criterion_group! { name = benches; config = config(); targets = bench }
criterion_main!(benches);
