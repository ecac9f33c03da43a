//! Chain rejection sampling (batch 64, L = 4, vocabulary 128256), tree verification (batch 64,
//! 8-node binary trees) and the fused sampler (batch 64, vocabulary 128256), beside the
//! device-to-device copy bandwidth of the same run.
//!
//! The byte bound of rejection sampling is the issue's: target probs (64 × 5 × V × 4 bytes)
//! plus draft probs (64 × 4 × V × 4). The kernel reads far less (two values per accepted
//! position and only the row it draws from), so "GB/s" here is bound bytes over time and may
//! exceed the copy ceiling; the line also prints the ratio time / (bound bytes / copy GB/s).
#[path = "common.rs"]
mod common;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use verify_pd::backend::cuda::sampling::{self, ChainBatch, ChainOut, ChainRows, RowCounters, RowParams};
use verify_pd::backend::cuda::tree_verify::{self, TreeBatch, TreeDraft, TreeOut};
use vpd_sampling::ChildSampling;

fn config() -> Criterion {
    Criterion::default().sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1))
}

/// Rows of probabilities proportional to exp(x), x from `common::rand_f32` in [-1, 1).
fn probs(rows: usize, v: usize, seed: u64) -> Vec<f32> {
    let x = common::rand_f32(rows * v, seed);
    x.chunks_exact(v)
        .flat_map(|r| {
            let z: f32 = r.iter().map(|e| e.exp()).sum();
            r.iter().map(move |e| e.exp() / z).collect::<Vec<_>>()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let Some(dev) = common::open() else { return };
    let ceiling = common::copy_gbps(&dev);
    let (b, l, v) = (64usize, 4usize, 128_256usize);
    let name = format!("cuda_{}", dev.name.replace(' ', "_"));
    let ratio = |secs: f64, bytes: f64| secs / (bytes / (ceiling * 1e9));

    // Rejection sampling with drafted tokens uniform at random over the vocabulary and nearly
    // flat p and q (weights e^x, x in [-1, 1)): acceptance is mixed, so most rows read one p row
    // and one q row for the residual and some read p_L for the bonus.
    let target = dev.upload(&probs(b * (l + 1), v, 1)).unwrap();
    let draft = dev.upload(&probs(b * l, v, 2)).unwrap();
    let seeds = dev.upload(&(0..b as u64).collect::<Vec<_>>()).unwrap();
    let lens = dev.upload(&vec![l as u32; b]).unwrap();
    let bound = ((b * (l + 1) * v + b * l * v) * 4) as f64;
    let (mut acc, mut out) = (dev.alloc::<u32>(b).unwrap(), dev.alloc::<u32>(b * (l + 1)).unwrap());
    let what = "random drafts";
    let toks: Vec<u32> = common::rand_bf16(b * l, 3).iter().map(|&t| u32::from(t) % v as u32).collect();
    let tok = dev.upload(&toks).unwrap();
    let batch = ChainBatch { target: &target, draft_tokens: &tok, num_drafts: &lens, rows: b, vocab: v, max_draft: l };
    let mut offset = 0u64;
    let mut run = || {
        offset += 1;
        sampling::verify_chain(&dev, &batch, &draft, &seeds, &mut ChainOut { accepted: &mut acc, tokens: &mut out }, offset).unwrap()
    };
    let secs = common::median_secs(&dev, 15, &mut run);
    common::report(&dev, "chain_verify", &format!("B={b} L={l} V={v} {what}"), secs, bound, ceiling);
    println!("{} chain_verify time / byte bound at copy bandwidth = {:.2}x (target <= 1.5x)", dev.name, ratio(secs, bound));
    let mut g = c.benchmark_group(name.clone());
    g.throughput(Throughput::Bytes(bound as u64));
    g.bench_function(format!("chain_verify/B={b}/L={l}/V={v}"), |bch| bch.iter_custom(|n| common::time(&dev, n, &mut run)));
    g.finish();
    // Greedy verification reads every row until the first mismatch (all L + 1 when accepted).
    let toks = dev.upload(&vec![0u32; b * l]).unwrap();
    let batch = ChainBatch { target: &target, draft_tokens: &toks, num_drafts: &lens, rows: b, vocab: v, max_draft: l };
    let mut run = || sampling::verify_chain_greedy(&dev, &batch, &mut ChainOut { accepted: &mut acc, tokens: &mut out }).unwrap();
    let secs = common::median_secs(&dev, 15, &mut run);
    common::report(&dev, "chain_greedy", &format!("B={b} L={l} V={v} (reads >= 1 row)"), secs, (b * v * 4) as f64, ceiling);

    // Tree verification: random tokens are mostly rejected, so each visited position costs its
    // residual passes over p and q (reads and writes of the u64 workspace).
    let n = 8usize;
    let parents: Vec<i32> = (0..b).flat_map(|_| [-1, -1, 0, 0, 1, 1, 2, 2]).collect();
    let toks: Vec<u32> = common::rand_bf16(b * n, 5).iter().map(|&t| u32::from(t) % v as u32).collect();
    let (tp, tq) = (dev.upload(&probs(b * (n + 1), v, 6)).unwrap(), dev.upload(&probs(b * (n + 1), v, 7)).unwrap());
    let (tok, par, cnt, has) =
        (dev.upload(&toks).unwrap(), dev.upload(&parents).unwrap(), dev.upload(&vec![n as u32; b]).unwrap(), dev.upload(&vec![1u8; b * (n + 1)]).unwrap());
    let mut ws = dev.alloc::<u64>(b * v).unwrap();
    let (mut acc, mut path, mut out) = (dev.alloc::<u32>(b).unwrap(), dev.alloc::<u32>(b * n).unwrap(), dev.alloc::<u32>(b * (n + 1)).unwrap());
    let batch = TreeBatch { target: &tp, tokens: &tok, parents: &par, num_nodes: &cnt, rows: b, vocab: v, max_nodes: n };
    let bound = (2 * b * (n + 1) * v * 4) as f64;
    for mode in [ChildSampling::Iid, ChildSampling::WithoutReplacement] {
        let mut offset = 0u64;
        let mut run = || {
            offset += 1;
            let mut d = TreeDraft { draft: &tq, has_draft: &has, seed: &seeds, workspace: &mut ws, mode };
            let mut o = TreeOut { accepted: &mut acc, path: &mut path, tokens: &mut out };
            tree_verify::verify_tree(&dev, &batch, &mut d, &mut o, offset).unwrap()
        };
        let secs = common::median_secs(&dev, 15, &mut run);
        common::report(&dev, "tree_verify", &format!("B={b} nodes={n} V={v} {mode:?} random tokens"), secs, bound, ceiling);
        let mut g = c.benchmark_group(name.clone());
        g.throughput(Throughput::Bytes(bound as u64));
        g.bench_function(format!("tree_verify/B={b}/nodes={n}/V={v}/{mode:?}"), |bch| bch.iter_custom(|k| common::time(&dev, k, &mut run)));
        g.finish();
    }

    // Fused sampler: one read of the logits row for argmax, one for the masses.
    let logits = dev.upload(&common::rand_f32(b * v, 4).iter().map(|x| x * 8.0).collect::<Vec<_>>()).unwrap();
    let seed = dev.upload(&(0..b as u64).collect::<Vec<_>>()).unwrap();
    let mut out = dev.alloc::<u32>(b).unwrap();
    let bytes = (b * v * 4) as f64;
    for (what, t, k, p) in [("T=1", 1.0f32, 0u32, 1.0f32), ("T=0.7 k=50 p=0.9", 0.7, 50, 0.9), ("greedy", 0.0, 0, 1.0)] {
        let (dt, dk, dp) = (dev.upload(&vec![t; b]).unwrap(), dev.upload(&vec![k; b]).unwrap(), dev.upload(&vec![p; b]).unwrap());
        let rp = RowParams { temperature: &dt, top_k: &dk, top_p: &dp, seed: &seed };
        let mut offset = 0u64;
        let mut run = || {
            offset += 1;
            sampling::sample(&dev, &logits, &rp, &mut out, b, v, offset).unwrap()
        };
        let secs = common::median_secs(&dev, 15, &mut run);
        common::report(&dev, "sample", &format!("B={b} V={v} {what}"), secs, bytes, ceiling);
        let mut g = c.benchmark_group(name.clone());
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function(format!("sample/B={b}/V={v}/{what}"), |bch| bch.iter_custom(|n| common::time(&dev, n, &mut run)));
        g.finish();
        // The engine's form (`Backend::forward_pick`): a Philox counter per row, and the
        // processed rows written too (a drafter's q, or the target's p for verification).
        let ctr = dev.upload(&(0..b as u64).map(|i| 1000 + i).collect::<Vec<_>>()).unwrap();
        let mut probs_out = dev.alloc::<f32>(b * v).unwrap();
        let mut run = || {
            let c = RowCounters { counter: &ctr, stream: 1 };
            sampling::sample_rows(&dev, &logits, &rp, &c, &mut out, Some(&mut probs_out), b, v).unwrap()
        };
        let secs = common::median_secs(&dev, 15, &mut run);
        common::report(&dev, "sample+probs", &format!("B={b} V={v} {what} (reads + writes rows)"), secs, 2.0 * bytes, ceiling);
    }

    // Chain verification as the engine lays it out (`verify_chain_rows`): the target's rows of
    // a step (L + 1 a chain, one after another) and the drafter's q rows by address.
    let q_base = verify_pd::backend::cuda::device::raw_ptr(&dev, &draft);
    let addrs: Vec<u64> = (0..b * l).map(|i| q_base + (i * v * 4) as u64).collect();
    let (tr, dr) = (
        dev.upload(&(0..b as u32).map(|r| r * (l as u32 + 1)).collect::<Vec<_>>()).unwrap(),
        dev.upload(&addrs).unwrap(),
    );
    let ctr = dev.upload(&(0..b as u64).collect::<Vec<_>>()).unwrap();
    let toks: Vec<u32> = common::rand_bf16(b * l, 3).iter().map(|&t| u32::from(t) % v as u32).collect();
    let tok = dev.upload(&toks).unwrap();
    let (mut acc, mut out) = (dev.alloc::<u32>(b).unwrap(), dev.alloc::<u32>(b * (l + 1)).unwrap());
    let rows = ChainRows {
        target: &target,
        target_rows: b * (l + 1),
        target_row: &tr,
        draft_rows: &dr,
        draft_tokens: &tok,
        num_drafts: &lens,
        seed: &seeds,
        counter: &ctr,
        rows: b,
        vocab: v,
        max_draft: l,
    };
    // SAFETY: every address is a row of `draft`, alive and unwritten for the whole bench.
    let mut run = || unsafe { sampling::verify_chain_rows(&dev, &rows, &mut ChainOut { accepted: &mut acc, tokens: &mut out }) }.unwrap();
    let bound = ((b * (l + 1) * v + b * l * v) * 4) as f64;
    let secs = common::median_secs(&dev, 15, &mut run);
    common::report(&dev, "chain_rows", &format!("B={b} L={l} V={v} random drafts, q by address"), secs, bound, ceiling);
    println!("{} chain_rows time / byte bound at copy bandwidth = {:.2}x", dev.name, ratio(secs, bound));
}

criterion_group! { name = benches; config = config(); targets = bench }
criterion_main!(benches);
