//! The whole batch-1 decode step at the Llama-3-8B and Llama-3.2-1B shapes (bf16 weights drawn
//! on the device, `CudaBackend::random`), against its bandwidth floor: the weight bytes one step
//! reads (15.01 GB and 2.47 GB) over the device-to-device copy bandwidth measured in the same
//! run (shared ALGORITHMS.md, "Bandwidth floor"). Three timings:
//! - `host`: `Backend::forward` as the engine calls it (plan upload, kernels, logits download,
//!   host wall clock, median of single steps);
//! - `stream`: the step's kernels launched back to back on the stream (device events);
//! - `graph`: the same kernels captured once as a CUDA graph and replayed (device events);
//! - `graph-blas`: that graph with the layers on cuBLAS and separate RMSNorm, RoPE and SwiGLU
//!   kernels instead of the fused GEMV kernels (`CudaBackend::set_gemv(false)`).
//!
//! `host`, `argmax`, `argmax+g` (the runtime's greedy path with decode graphs), `stream` and
//! `graph` run the fused GEMV path, the default.
//!
//! The K/V context is 128 positions, so the cache adds 0.4% (8B) to the bytes.
//!
//! Then the 8B verify step at 128 running requests: each sequence's L + 1 = 5 chain tokens at
//! 512 cached positions (ShareGPT-sized), `stream` timing, with the attention's query tiles
//! (the default) and with one token a warp (`CudaBackend::set_query_tiles(false)`). Two floors:
//! the bytes (weights plus every sequence's K/V once) over the copy rate, and the step's
//! 2 · parameters · tokens FLOPs, printed for dividing by the GEMM rate of the same call
//! (tools/gpu-ceiling.py): at 640 tokens the step is bound by compute, not bandwidth.
#[path = "common.rs"]
mod common;

use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::{CudaContext, CudaStream};

use verify_pd::backend::cuda::{step_weight_bytes, CudaBackend};
use verify_pd::backend::{Backend, LogitsWanted, SeqStep, StepPlan};
use verify_pd::make_model::Preset;

fn main() {
    // Criterion's harness flags (`--bench`) are accepted and ignored: this bench prints its
    // own table, median of many steps, since one 8B step is milliseconds.
    let Some(dev) = common::open() else { return };
    let ceiling = common::copy_gbps(&dev);
    let tflops = common::gemm_tflops(&dev);
    drop(dev);
    // Profiling one loaded step (tools/gpu-profile-step.sh) needs only those.
    if std::env::var("VPD_PROFILE").is_ok_and(|p| p.starts_with("loaded-")) {
        loaded_steps(ceiling, tflops);
        return;
    }
    let ctx = 128usize;
    for (name, preset) in [("llama3-8b", Preset::Llama3_8b), ("llama3.2-1b", Preset::Llama32_1b)] {
        let cfg = preset.config();
        let bs = 16;
        let blocks = (ctx + 1).div_ceil(bs) + 1;
        let mut be = match CudaBackend::random(cfg.clone(), blocks, bs, 0, 11) {
            Ok(b) => b,
            Err(e) => {
                println!("decode_step {name}: skipped: {e}");
                continue;
            }
        };
        let plan = StepPlan {
            seqs: vec![SeqStep {
                tokens: vec![7],
                start_pos: ctx,
                block_table: (0..blocks as u32).collect(),
                tree_parents: None,
                logits: LogitsWanted::Last,
            }],
        };
        let layers = cfg.num_hidden_layers;
        let bytes = (step_weight_bytes(&cfg) + kv_bytes(&cfg, 1, ctx + 1)) as f64;
        let floor = step_weight_bytes(&cfg) as f64 / (ceiling * 1e9);
        // Host path: whole forward calls.
        let host = wall_median(3, 40, || {
            be.forward(&plan).expect("forward");
        });
        // The runtime's greedy path (`forward_argmax`), without and with decode graphs.
        let greedy = |be: &mut CudaBackend| {
            wall_median(3, 40, || {
                be.forward_argmax(&plan, layers).expect("forward_argmax");
            })
        };
        let argmax = greedy(&mut be);
        be.set_decode_graphs(true);
        let argmax_graph = greedy(&mut be);
        be.set_decode_graphs(false);
        // Stream path and graph path on one prepared step.
        let step = be.prepare_step(&plan, layers).expect("prepare");
        be.launch_step(&step).expect("launch");
        be.read_logits(&step).expect("sync");
        let (ctx_h, stream_h) = (be.device().ctx.clone(), be.device().stream.clone());
        common::profile_once(&stream_h, name, || be.launch_step(&step).expect("launch"));
        let stream = median(&ctx_h, &stream_h, || be.launch_step(&step).expect("launch"));
        // One capture of the prepared step, replayed (None when capture fails, which it says).
        let graph_time = |be: &mut CudaBackend, what: &str| match be.capture_step(&step) {
            Ok(g) => Some(median(&ctx_h, &stream_h, || be.replay_step(&g).expect("replay"))),
            Err(e) => {
                println!("decode_step {name}: graph capture ({what}) failed: {e}");
                None
            }
        };
        let graph = graph_time(&mut be, "fused path");
        // The same graph with decode layers on cuBLAS and the separate kernels (no fused GEMV).
        be.set_gemv(false);
        let graph_blas = graph_time(&mut be, "cuBLAS path");
        be.set_gemv(true);
        let dev = be.device();
        let rows = [
            ("host", Some(host)),
            ("argmax", Some(argmax)),
            ("argmax+g", Some(argmax_graph)),
            ("stream", Some(stream)),
            ("graph", graph),
            ("graph-blas", graph_blas),
        ];
        for (how, secs) in rows {
            let Some(secs) = secs else { continue };
            println!(
                "{} decode_step {name:<12} {how:<10} {:>8.3} ms  floor {:>6.3} ms ({:.2} GB / {ceiling:.0} GB/s)  {:>5.1}% of floor  {:>6.0} GB/s",
                dev.name,
                secs * 1e3,
                floor * 1e3,
                step_weight_bytes(&cfg) as f64 / 1e9,
                100.0 * floor / secs,
                bytes / secs / 1e9
            );
        }
    }
    verify_step(ceiling);
    loaded_steps(ceiling, tflops);
}

/// Forwards of the sizes a loaded runtime runs (the 8B verify of S sequences × n tokens with
/// logits for every token, the 1B draft step of S sequences with the last token's logits), at
/// 256 cached positions, stream timing, each against the larger of its byte floor (weights
/// plus K/V over the copy rate) and its FLOP floor (2 · parameters · tokens over the GEMM rate
/// measured in the same run). `VPD_PROFILE=loaded-llama3-8b-64x2` (and so on) runs one of them
/// inside a profiler range for `ncu --profile-from-start off`.
fn loaded_steps(ceiling: f64, tflops: f64) {
    let (ctx, bs) = (256usize, 16usize);
    // (name, shape, sequences × tokens each, logits wanted)
    type Case = (&'static str, Preset, &'static [(usize, usize)], LogitsWanted);
    let cases: [Case; 2] = [
        ("llama3-8b", Preset::Llama3_8b, &[(32, 2), (64, 1), (64, 2), (64, 3), (64, 5), (128, 1), (128, 2)], LogitsWanted::All),
        ("llama3.2-1b", Preset::Llama32_1b, &[(32, 1), (64, 1), (64, 2), (128, 1), (128, 2)], LogitsWanted::Last),
    ];
    println!("loaded steps: copy {ceiling:.0} GB/s, GEMM {tflops:.0} TFLOP/s");
    for (name, preset, shapes, logits) in cases {
        let cfg = preset.config();
        let per = (ctx + 5).div_ceil(bs);
        let mut be = match CudaBackend::random(cfg.clone(), 128 * per, bs, 0, 11) {
            Ok(b) => b,
            Err(e) => {
                println!("loaded_steps {name}: skipped: {e}");
                continue;
            }
        };
        let layers = cfg.num_hidden_layers;
        for &(batch, n) in shapes {
            let plan = seq_plan(batch, n, ctx, per, logits);
            let bytes = (step_weight_bytes(&cfg) + kv_bytes(&cfg, batch, ctx + n)) as f64;
            let flops = step_weight_bytes(&cfg) as f64 * (batch * n) as f64;
            let floor = (bytes / (ceiling * 1e9)).max(flops / (tflops * 1e12));
            let step = be.prepare_step(&plan, layers).expect("prepare");
            be.launch_step(&step).expect("launch");
            be.read_logits(&step).expect("sync");
            let (ctx_h, stream_h) = (be.device().ctx.clone(), be.device().stream.clone());
            common::profile_once(&stream_h, &format!("loaded-{name}-{batch}x{n}"), || be.launch_step(&step).expect("launch"));
            let secs = median(&ctx_h, &stream_h, || be.launch_step(&step).expect("launch"));
            println!(
                "{} loaded_step {name:<12} {batch:>3}x{n} = {:>3} tokens {:>8.3} ms  floor {:>6.3} ms  {:>5.1}% of floor",
                be.device().name,
                batch * n,
                secs * 1e3,
                floor * 1e3,
                100.0 * floor / secs
            );
        }
        if preset == Preset::Llama3_8b {
            mixed_steps(&mut be, &cfg, ctx, per);
        }
    }
}

/// The 8B forwards of a loaded serving loop: `batch` decode sequences of one token each at
/// `ctx` cached positions, plus prompt chunks that ride in the same forward (new sequences
/// from position 0, last row's logits only), stream timing; then the same step as the engine
/// calls it (`Backend::forward_argmax`: plan upload, kernels, argmax rows read back, host wall
/// clock), beside the plain 64 × 2 step, so the host's share of a forward shows.
fn mixed_steps(be: &mut CudaBackend, cfg: &vpd_formats::LlamaConfig, ctx: usize, per: usize) {
    let layers = cfg.num_hidden_layers;
    let cases: [(usize, &[usize]); 4] = [(64, &[]), (64, &[128]), (64, &[64, 64]), (64, &[256])];
    for (batch, prompts) in cases {
        let mut plan = seq_plan(batch, 1, ctx, per, LogitsWanted::Last);
        for (i, &len) in prompts.iter().enumerate() {
            let first = ((batch + i) * per) as u32;
            plan.seqs.push(SeqStep {
                tokens: vec![7; len],
                start_pos: 0,
                block_table: (first..first + per as u32).collect(),
                tree_parents: None,
                logits: LogitsWanted::Last,
            });
        }
        let tokens = plan.num_tokens();
        let label = prompts.iter().fold(format!("{batch}x1"), |acc, p| format!("{acc}+{p}"));
        let step = be.prepare_step(&plan, layers).expect("prepare");
        be.launch_step(&step).expect("launch");
        be.read_logits(&step).expect("sync");
        let (ctx_h, stream_h) = (be.device().ctx.clone(), be.device().stream.clone());
        common::profile_once(&stream_h, &format!("loaded-llama3-8b-{label}"), || be.launch_step(&step).expect("launch"));
        let stream = median(&ctx_h, &stream_h, || be.launch_step(&step).expect("launch"));
        let host = wall_median(0, 25, || {
            be.forward_argmax(&plan, layers).expect("forward");
        });
        println!(
            "{} mixed_step llama3-8b {label:<12} = {tokens:>3} tokens  stream {:>7.3} ms  engine call {:>7.3} ms (+{:.3})",
            be.device().name,
            stream * 1e3,
            host * 1e3,
            (host - stream) * 1e3
        );
    }
}

/// `batch` sequences of `n` new tokens each after `ctx` cached positions, sequence s on blocks
/// s · per .. (s + 1) · per.
fn seq_plan(batch: usize, n: usize, ctx: usize, per: usize, logits: LogitsWanted) -> StepPlan {
    StepPlan {
        seqs: (0..batch)
            .map(|s| SeqStep {
                tokens: vec![7; n],
                start_pos: ctx,
                block_table: ((s * per) as u32..((s + 1) * per) as u32).collect(),
                tree_parents: None,
                logits,
            })
            .collect(),
    }
}

/// Bytes of K and V (bf16) a step reads for `batch` sequences of `positions` each.
fn kv_bytes(cfg: &vpd_formats::LlamaConfig, batch: usize, positions: usize) -> usize {
    batch * 2 * cfg.num_hidden_layers * positions * cfg.num_key_value_heads * cfg.head_dim * 2
}

/// The 8B verify step of 128 sequences × 5 tokens at 512 cached positions, query tiles on
/// and off.
fn verify_step(ceiling: f64) {
    let (batch, n, ctx, bs) = (128usize, 5usize, 512usize, 16usize);
    let cfg = Preset::Llama3_8b.config();
    let per = (ctx + n).div_ceil(bs);
    let mut be = match CudaBackend::random(cfg.clone(), batch * per, bs, 0, 11) {
        Ok(b) => b,
        Err(e) => {
            println!("verify_step: skipped: {e}");
            return;
        }
    };
    let plan = seq_plan(batch, n, ctx, per, LogitsWanted::All);
    let layers = cfg.num_hidden_layers;
    let bytes = (step_weight_bytes(&cfg) + kv_bytes(&cfg, batch, ctx + n)) as f64;
    let floor = bytes / (ceiling * 1e9);
    let mut times = Vec::new();
    for tiles in [true, false] {
        be.set_query_tiles(tiles);
        let step = be.prepare_step(&plan, layers).expect("prepare");
        be.launch_step(&step).expect("launch");
        be.read_logits(&step).expect("sync");
        let (ctx_h, stream_h) = (be.device().ctx.clone(), be.device().stream.clone());
        times.push(median(&ctx_h, &stream_h, || be.launch_step(&step).expect("launch")));
    }
    for (how, secs) in ["tiles", "per-token"].iter().zip(&times) {
        println!(
            "{} verify_step llama3-8b {batch}x{n} ctx={ctx} {how:<10} {:>8.3} ms  floor {:>6.3} ms ({:.2} GB / {ceiling:.0} GB/s)  {:>5.1}% of floor",
            be.device().name,
            secs * 1e3,
            floor * 1e3,
            bytes / 1e9,
            100.0 * floor / secs
        );
    }
    // bf16: one parameter per two weight bytes, two FLOPs a parameter a token.
    let tflop = step_weight_bytes(&cfg) as f64 * (batch * n) as f64 / 1e12;
    println!(
        "verify_step llama3-8b: per-token / tiles = {:.2}x; {tflop:.2} TFLOP a step (compute floor = that / GEMM rate)",
        times[1] / times[0]
    );
}

/// Median seconds per step over 15 timed batches of 10 steps, between device events on the
/// backend's stream (cloned handles, so the closure may hold the backend mutably), after a
/// warm-up.
/// Median host wall time of `iters` calls of `f`, after `warm` untimed ones.
fn wall_median(warm: usize, iters: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warm {
        f();
    }
    let mut t: Vec<f64> = (0..iters)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn median(ctx: &Arc<CudaContext>, stream: &Arc<CudaStream>, mut f: impl FnMut()) -> f64 {
    let mut time = |iters: usize| {
        let ev = || ctx.new_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT)).expect("event");
        let (start, end) = (ev(), ev());
        start.record(stream).expect("record");
        for _ in 0..iters {
            f();
        }
        end.record(stream).expect("record");
        end.synchronize().expect("sync");
        f64::from(start.elapsed_ms(&end).expect("elapsed")) / 1e3 / iters as f64
    };
    time(3);
    let mut v: Vec<f64> = (0..15).map(|_| time(10)).collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
