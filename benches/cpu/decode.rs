//! CPU batch-1 decode step of SmolLM2-135M, beside the memory-bandwidth bound measured in the
//! same run: a decode step must read every weight once, so `weight bytes / read bandwidth` is
//! the fastest it can possibly be.
//!
//! `cargo bench --bench cpu_decode` (needs `assets/`; `make test` fetches them).
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rayon::prelude::*;
use verify_pd::backend::cpu::CpuBackend;
use verify_pd::backend::{Backend, LogitsWanted, SeqStep, StepPlan};
use verify_pd::model::Model;

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/SmolLM2-135M-Instruct.Q4_1.gguf");

/// Read bandwidth in bytes/s: a parallel sum over a buffer far larger than the caches,
/// median of several passes. Sixteen independent accumulators let the sum vectorise, so the
/// loop is bound by memory, not by a chain of dependent float adds.
fn read_bandwidth() -> f64 {
    fn sum(c: &[f32]) -> f32 {
        let mut acc = [0.0f32; 16];
        for b in c.chunks_exact(16) {
            for (a, x) in acc.iter_mut().zip(b) {
                *a += x;
            }
        }
        acc.iter().sum()
    }
    let buf = vec![1.0f32; 256 << 20 >> 2]; // 256 MiB
    let mut rates: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            let s: f32 = buf.par_chunks(1 << 16).map(sum).sum();
            black_box(s);
            (buf.len() * 4) as f64 / t.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

fn bench(c: &mut Criterion) {
    if !Path::new(MODEL).exists() {
        eprintln!("skipping cpu_decode: {MODEL} missing (run `make test` or `bash tools/fetch-assets.sh`)");
        return;
    }
    let model = Model::load(Path::new(MODEL)).expect("load SmolLM2");
    let cfg = model.config.clone();
    let mut be = CpuBackend::new(cfg.clone(), Arc::clone(&model.weights), 8, 16).expect("backend");
    let table: Vec<u32> = (0..8).collect();
    let prompt: Vec<u32> = (0..32).map(|i| 100 + i).collect();
    let plan = |tokens: Vec<u32>, start_pos| StepPlan {
        seqs: vec![SeqStep { tokens, start_pos, block_table: table.clone(), tree_parents: None, logits: LogitsWanted::Last }],
    };
    be.forward(&plan(prompt, 0)).expect("prefill");
    let step = plan(vec![42], 32);
    let bytes = cfg.decode_weight_bytes(4) as f64;
    let bw = read_bandwidth();
    let mut g = c.benchmark_group("cpu");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.sample_size(30);
    g.bench_function("smollm2_135m_decode_b1", |b| b.iter(|| black_box(be.forward(&step).expect("step"))));
    g.finish();
    // A direct median for the ratio line (criterion's own report is above).
    let mut times: Vec<f64> = (0..30)
        .map(|_| {
            let t = Instant::now();
            black_box(be.forward(&step).expect("step"));
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let med = times[times.len() / 2];
    let floor = bytes / bw;
    println!(
        "cpu smollm2-135m decode b1 (f32 weights, {:.0} MB/step): median {:.2} ms = {:.2} GB/s; \
         read bandwidth {:.2} GB/s ({} threads) -> floor {:.2} ms; {:.0}% of the bound",
        bytes / 1e6,
        med * 1e3,
        bytes / med / 1e9,
        bw / 1e9,
        rayon::current_num_threads(),
        floor * 1e3,
        100.0 * floor / med
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
