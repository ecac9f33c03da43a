//! Lane isolation: how much a concurrent verify step or prefill chunk slows the decode (draft)
//! step, with plain streams and priorities and with green-context SM partitions (issue 5,
//! item 2; shared ALGORITHMS.md, "Isolating the decode lane on one GPU").
//!
//! - draft: Llama-3.2-1B shape, batch 8, context 512 each, one token per sequence, CUDA graph;
//! - verify: Llama-3-8B shape, 8 sequences × 5 tokens (40 tokens, logits for all), context 512;
//! - prefill: Llama-3-8B shape, one 512-token chunk through the first 8 of its 32 layers
//!   (no logits), as in ALGORITHMS.md;
//!
//! all with our own kernels and cuBLAS, each captured as a CUDA graph on the lane it runs on.
//! Modes: whole GPU, stream priorities, a decode partition with verify and prefill on the
//! rest (`--decode-sms`), and prefill confined to a partition with decode and verify on the
//! whole GPU (`--prefill-sms`, what the runtime does while decode has work).
//! The figure of merit is the draft step's median latency under load over its median latency
//! alone on the whole GPU. Per-step times come from device events between consecutive steps
//! of a saturated stream; under load, only draft steps that finished before the load's last
//! step count. The device-to-device copy bandwidth is measured in the same run.
#[path = "common.rs"]
mod common;

use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::{sys::CUevent_flags, CudaContext, CudaEvent, CudaStream};

use verify_pd::backend::cuda::lanes::{Isolation, Lanes};
use verify_pd::backend::cuda::{CudaBackend, PreparedStep, StepGraph};
use verify_pd::backend::{LogitsWanted, SeqStep, StepPlan};
use verify_pd::error::Result;
use verify_pd::make_model::Preset;

const CTX: usize = 512;
const BS: usize = 16;
const DRAFT_STEPS: usize = 40;

fn seqs(n: usize, tokens: usize, start: usize, first_block: u32, logits: LogitsWanted) -> Vec<SeqStep> {
    let per = (start + tokens).div_ceil(BS) as u32;
    (0..n as u32)
        .map(|i| SeqStep {
            tokens: (0..tokens as u32).map(|t| 100 + t + i).collect(),
            start_pos: start,
            block_table: (first_block + i * per..first_block + (i + 1) * per).collect(),
            tree_parents: None,
            logits,
        })
        .collect()
}

fn event(ctx: &Arc<CudaContext>) -> CudaEvent {
    ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).expect("event")
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A graph ready to replay on the stream it was captured on, with that stream for timing.
struct Graph {
    g: StepGraph,
    /// The plans' device buffers the graph reads: they must live as long as the graph.
    _steps: Vec<PreparedStep>,
    stream: Arc<CudaStream>,
    ctx: Arc<CudaContext>,
}

/// Prepares every plan (so the workspace is sized once), runs each once, captures `which`.
fn capture(be: &mut CudaBackend, plans: &[(&StepPlan, usize)], which: usize) -> Result<Graph> {
    let steps: Vec<PreparedStep> = plans.iter().map(|(p, l)| be.prepare_step(p, *l)).collect::<Result<_>>()?;
    for s in &steps {
        be.launch_step(s)?;
    }
    be.read_logits(&steps[which])?;
    let g = be.capture_step(&steps[which])?;
    let (stream, ctx) = (be.device().stream.clone(), be.device().ctx.clone());
    Ok(Graph { g, _steps: steps, stream, ctx })
}

/// Events after each of `n` back-to-back replays of `g` (the first event before the first).
fn enqueue(be: &CudaBackend, g: &Graph, n: usize) -> Result<Vec<CudaEvent>> {
    let evs: Vec<CudaEvent> = (0..=n).map(|_| event(&g.ctx)).collect();
    evs[0].record(&g.stream).expect("record");
    for e in &evs[1..] {
        be.replay_step(&g.g)?;
        e.record(&g.stream).expect("record");
    }
    Ok(evs)
}

fn step_ms(evs: &[CudaEvent]) -> Vec<f64> {
    evs.windows(2).map(|w| f64::from(w[0].elapsed_ms(&w[1]).expect("elapsed"))).collect()
}

/// Median ms of one replay, alone on its stream (a few warm-up replays first).
fn solo(be: &CudaBackend, g: &Graph) -> Result<f64> {
    enqueue(be, g, 3)?.last().expect("event").synchronize().expect("sync");
    let evs = enqueue(be, g, DRAFT_STEPS)?;
    evs.last().expect("event").synchronize().expect("sync");
    Ok(median(step_ms(&evs)))
}

/// `(draft ms, load ms, draft steps counted)` with the load replayed on its own stream,
/// enqueued first and long enough to outlast the draft steps.
fn under_load(
    draft: &CudaBackend,
    dg: &Graph,
    target: &CudaBackend,
    lg: &Graph,
    draft_solo: f64,
    load_solo: f64,
) -> Result<(f64, f64, usize)> {
    let n_load = ((DRAFT_STEPS as f64 * draft_solo * 2.5 / load_solo).ceil() as usize).clamp(3, 400);
    let load = enqueue(target, lg, n_load)?;
    let d = enqueue(draft, dg, DRAFT_STEPS)?;
    load.last().expect("event").synchronize().expect("sync");
    d.last().expect("event").synchronize().expect("sync");
    let load_end = load.last().expect("event");
    // Draft steps that ended while the load still ran; skip the first (the load may not have
    // reached the device yet).
    let times = step_ms(&d);
    let kept: Vec<f64> = times
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(i, _)| d[i + 1].elapsed_ms(load_end).map(|ms| ms > 0.0).unwrap_or(false))
        .map(|(_, &t)| t)
        .collect();
    let n = kept.len();
    Ok((median(kept), median(step_ms(&load)), n))
}

struct Row {
    mode: String,
    solo_lane: f64,
    verify: (f64, f64, usize),
    prefill: (f64, f64, usize),
    verify_solo: f64,
    prefill_solo: f64,
}

/// One mode: draft on `lanes.decode` (or home streams when `lanes` is None), the target on the
/// verify lane for the verify load and on the prefill lane for the prefill load.
fn run_mode(
    mode: &str,
    lanes: Option<&Lanes>,
    draft: &mut CudaBackend,
    target: &mut CudaBackend,
    plans: &Plans,
) -> Result<(Row, Vec<f32>)> {
    if let Some(l) = lanes {
        draft.bind_lane(&l.decode)?;
        target.bind_lane(&l.verify)?;
    }
    // The draft's logits on this lane, against the whole-GPU run (proves the kernels ran).
    let dstep = draft.prepare_step(&plans.draft, usize::MAX)?;
    draft.launch_step(&dstep)?;
    let logits = draft.read_logits(&dstep)?;
    let dg = capture(draft, &[(&plans.draft, usize::MAX)], 0)?;
    let solo_lane = solo(draft, &dg)?;
    let tplans = [(&plans.prefill, 8), (&plans.verify, usize::MAX)];
    let vg = capture(target, &tplans, 1)?;
    let verify_solo = solo(target, &vg)?;
    let verify = under_load(draft, &dg, target, &vg, solo_lane, verify_solo)?;
    drop(vg);
    if let Some(l) = lanes {
        target.bind_lane(&l.prefill)?;
    }
    let pg = capture(target, &tplans, 0)?;
    let prefill_solo = solo(target, &pg)?;
    let prefill = under_load(draft, &dg, target, &pg, solo_lane, prefill_solo)?;
    drop((pg, dg));
    draft.unbind_lane()?;
    target.unbind_lane()?;
    Ok((Row { mode: mode.into(), solo_lane, verify, prefill, verify_solo, prefill_solo }, logits))
}

struct Plans {
    draft: StepPlan,
    verify: StepPlan,
    prefill: StepPlan,
}

fn main() {
    // Criterion's harness flags (`--bench`) are accepted and ignored: this bench prints its own
    // table, medians of device-event timings.
    let Some(dev) = common::open() else { return };
    let copy = common::copy_gbps(&dev);
    let card = dev.name.clone();
    let per = (CTX + 5).div_ceil(BS);
    let plans = Plans {
        draft: StepPlan { seqs: seqs(8, 1, CTX, 0, LogitsWanted::Last) },
        verify: StepPlan { seqs: seqs(8, 5, CTX, 0, LogitsWanted::All) },
        prefill: StepPlan { seqs: seqs(1, 512, 0, (8 * per) as u32, LogitsWanted::None) },
    };
    let blocks = 8 * per + 512 / BS + 1;
    let built = CudaBackend::random(Preset::Llama32_1b.config(), blocks, BS, 0, 21)
        .and_then(|d| Ok((d, CudaBackend::random(Preset::Llama3_8b.config(), blocks, BS, 0, 22)?)));
    let (mut draft, mut target) = match built {
        Ok(b) => b,
        Err(e) => {
            println!("isolation: skipped: {e}");
            return;
        }
    };
    let rules = Lanes::sm_rules(&dev);
    println!("{card}: {} SMs, partition rules {rules:?}", dev.sm_count);
    let mut rows = Vec::new();
    let whole = match run_mode("whole GPU, default streams", None, &mut draft, &mut target, &plans) {
        Ok((r, logits)) => {
            rows.push(r);
            logits
        }
        Err(e) => {
            println!("isolation: error in the whole-GPU run: {e}");
            return;
        }
    };
    let base = rows[0].solo_lane;
    let mut modes: Vec<(String, Result<Lanes>)> = vec![("priorities".into(), Lanes::streams(&dev, "asked for"))];
    // Decode partition sizes (SMs): VPD_DECODE_SMS=32,48,64 (default 32,48,64,72,80,96).
    let sizes: Vec<u32> = std::env::var("VPD_DECODE_SMS")
        .unwrap_or_else(|_| "32,48,64,72,80,96".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    for sms in sizes {
        let t0 = Instant::now();
        let l = Lanes::green(&dev, sms);
        println!(
            "{card}: Lanes::green({sms}) took {:.2} ms: {:?}",
            t0.elapsed().as_secs_f64() * 1e3,
            l.as_ref().map(|l| &l.isolation)
        );
        modes.push((format!("green {sms}+{}", dev.sm_count - sms), l));
    }
    // Prefill confined to a partition, decode and verify on the whole GPU (the runtime's
    // `--prefill-sms`): VPD_PREFILL_SMS=32,48 (default 24,32,48,64).
    for sms in std::env::var("VPD_PREFILL_SMS")
        .unwrap_or_else(|_| "24,32,48,64".into())
        .split(',')
        .filter_map(|s| s.trim().parse::<u32>().ok())
    {
        modes.push((format!("prefill on {sms}, rest whole"), Lanes::confined_prefill(&dev, sms)));
    }
    for (mode, lanes) in modes {
        let lanes = match lanes {
            Ok(l) => l,
            Err(e) => {
                println!("{mode}: no lanes: {e}");
                continue;
            }
        };
        if let Isolation::StreamPriorities { reason } = &lanes.isolation {
            println!(
                "{mode}: plain streams, priorities decode {} / verify {} / prefill {} ({reason})",
                lanes.decode.priority(),
                lanes.verify.priority(),
                lanes.prefill.priority()
            );
        }
        match run_mode(&mode, Some(&lanes), &mut draft, &mut target, &plans) {
            Ok((r, logits)) => {
                let err = whole.iter().zip(&logits).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                println!("{mode}: draft logits max |diff| vs whole GPU {err:.2e} over {} values", logits.len());
                rows.push(r);
            }
            Err(e) => println!("{mode}: error: {e}"),
        }
    }
    println!();
    println!(
        "{card} isolation (copy {copy:.0} GB/s): draft = 1B shape, batch 8, ctx {CTX}, graph; solo on whole GPU {:.3} ms (= 1.00)",
        base
    );
    println!(
        "{:<28} {:>10} {:>6} | {:>10} {:>6} {:>4} {:>15} | {:>10} {:>6} {:>4} {:>15}",
        "mode",
        "draft solo",
        "ratio",
        "u/verify",
        "ratio",
        "n",
        "verify solo→ld",
        "u/prefill",
        "ratio",
        "n",
        "prefill solo→ld"
    );
    for r in &rows {
        println!(
            "{:<28} {:>7.3} ms {:>6.2} | {:>7.3} ms {:>6.2} {:>4} {:>6.2}→{:>5.2} ms | {:>7.3} ms {:>6.2} {:>4} {:>6.2}→{:>5.2} ms",
            r.mode,
            r.solo_lane,
            r.solo_lane / base,
            r.verify.0,
            r.verify.0 / base,
            r.verify.2,
            r.verify_solo,
            r.verify.1,
            r.prefill.0,
            r.prefill.0 / base,
            r.prefill.2,
            r.prefill_solo,
            r.prefill.1,
        );
    }
}
