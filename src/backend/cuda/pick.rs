//! [`Backend::forward_pick`](crate::backend::Backend::forward_pick) on the device: after the
//! step, one fused sampling launch (`csrc/sampling.cu`, `sample_kernel`) draws every row under
//! its request's parameters and Philox counter and, where a drafter keeps them or a chain is
//! verified, writes the processed distributions; one chain-verification launch then runs exact
//! speculative sampling (Leviathan et al. 2023) for every chain against the drafter's q rows,
//! wherever on the device they are. The host gets back a token per row and an accepted count
//! and token per chain, one synchronisation in all, instead of `4 · vocab` bytes a row.
//!
//! A drafter's q rows ([`DeviceProbRows`]) are read by the target's stream on another lane:
//! the drafter's [`CudaBackend::pick_rows`] synchronises its stream before it returns its
//! tokens, so the rows are written before the target's launch is even issued, and the
//! [`ProbRow`]s of a proposal outlive the verification that reads them (it synchronises too).
#![allow(unsafe_code)]

use std::any::Any;
use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream};

use super::device::{drv, ptr};
use super::sampling::{self, ChainOut, ChainRows, RowCounters, RowParams};
use super::CudaBackend;
use crate::backend::pick::{check_picks, HostProbRows, Pick, Picked, ProbRow, ProbRows, TARGET_STREAM};
use crate::backend::StepPlan;
use crate::error::{EngineError, Result};

/// Processed probability rows in device memory (a drafter's q), `[rows, vocab]` f32.
pub struct DeviceProbRows {
    buf: CudaSlice<f32>,
    rows: usize,
    vocab: usize,
    stream: Arc<CudaStream>,
}

impl std::fmt::Debug for DeviceProbRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceProbRows").field("rows", &self.rows).field("vocab", &self.vocab).finish_non_exhaustive()
    }
}

impl ProbRows for DeviceProbRows {
    fn num_rows(&self) -> usize {
        self.rows
    }
    fn vocab(&self) -> usize {
        self.vocab
    }
    fn row_to_host(&self, i: usize) -> Result<Vec<f32>> {
        if i >= self.rows {
            return Err(EngineError::Backend(format!("probability row {i} of {}", self.rows)));
        }
        self.stream.context().bind_to_thread().map_err(drv)?;
        let mut out = vec![0.0f32; self.vocab];
        self.stream.memcpy_dtoh(&self.buf.slice(i * self.vocab..(i + 1) * self.vocab), &mut out).map_err(drv)?;
        self.stream.synchronize().map_err(drv)?;
        Ok(out)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Per-row launch inputs gathered from the picks.
#[derive(Default)]
struct RowInputs {
    temperature: Vec<f32>,
    top_k: Vec<u32>,
    top_p: Vec<f32>,
    seed: Vec<u64>,
    counter: Vec<u64>,
}

/// Per-chain launch inputs.
#[derive(Default)]
struct ChainInputs {
    seqs: Vec<usize>,
    target_row: Vec<u32>,
    /// Device address of each q row, or an index into `host_q` (resolved after its upload).
    q: Vec<QRef>,
    draft_tokens: Vec<u32>,
    num_drafts: Vec<u32>,
    seed: Vec<u64>,
    counter: Vec<u64>,
}

enum QRef {
    OneHot,
    Device(u64),
    Host(usize),
}

impl CudaBackend {
    /// See the module header.
    pub(super) fn pick_rows(&mut self, plan: &StepPlan, num_layers: usize, picks: &[Pick<'_>]) -> Result<Vec<Picked>> {
        let ran = self.execute(plan, num_layers)?;
        check_picks(&ran.row_start, picks)?;
        let (rows, vocab) = (ran.rows, self.config.vocab_size);
        let mut stream = None;
        let mut inputs = RowInputs::default();
        let mut chains = ChainInputs::default();
        let mut host_q: Vec<f32> = Vec::new();
        let max_draft = picks
            .iter()
            .map(|p| if let Pick::Chain { drafts, .. } = p { drafts.len() } else { 0 })
            .max()
            .unwrap_or(0);
        if max_draft > sampling::MAX_DRAFT {
            return Err(EngineError::Backend(format!("a chain of {max_draft} drafts (at most {})", sampling::MAX_DRAFT)));
        }
        let mut want_probs = false;
        for (s, pick) in picks.iter().enumerate() {
            let (a, b) = (ran.row_start[s], ran.row_start[s + 1]);
            let draw = match pick {
                Pick::Skip => None,
                Pick::Draw { draw, keep } => {
                    want_probs |= *keep;
                    Some(*draw)
                }
                Pick::Chain { drafts, q, draw } => {
                    want_probs = true;
                    chains.seqs.push(s);
                    chains.target_row.push(a as u32);
                    for i in 0..max_draft {
                        chains.q.push(match q.get(i) {
                            None | Some(None) => QRef::OneHot,
                            Some(Some(row)) => self.q_ref(row, vocab, &mut host_q)?,
                        });
                        chains.draft_tokens.push(drafts.get(i).copied().unwrap_or(0));
                    }
                    chains.num_drafts.push(drafts.len() as u32);
                    chains.seed.push(draw.sampling.seed);
                    chains.counter.push(draw.counter);
                    // The chain's rows are drawn too (unused): the target's stream.
                    Some(crate::backend::RowDraw { stream: TARGET_STREAM, ..*draw })
                }
            };
            if let (Some(d), Pick::Draw { .. }) = (draw, pick) {
                match stream {
                    None => stream = Some(d.stream),
                    Some(st) if st != d.stream => {
                        return Err(EngineError::Backend("forward_pick: draws on two Philox streams in one step".into()));
                    }
                    Some(_) => {}
                }
            }
            for j in 0..b - a {
                let sp = draw.map(|d| d.sampling).unwrap_or_else(vpd_sampling::SamplingParams::greedy);
                inputs.temperature.push(sp.temperature);
                inputs.top_k.push(u32::try_from(sp.top_k).unwrap_or(u32::MAX));
                inputs.top_p.push(sp.top_p);
                inputs.seed.push(sp.seed);
                inputs.counter.push(draw.map_or(0, |d| d.counter + j as u64));
            }
        }
        let mut tokens = Vec::new();
        let mut chain_out: (Vec<u32>, Vec<u32>) = (Vec::new(), Vec::new());
        let mut kept = None;
        if rows > 0 {
            let d = &self.dev;
            let ws = self.ws.as_ref().ok_or_else(|| EngineError::Backend("forward_pick: no step ran".into()))?;
            let (temperature, top_k, top_p, seed, counter) = (
                d.upload(&inputs.temperature)?,
                d.upload(&inputs.top_k)?,
                d.upload(&inputs.top_p)?,
                d.upload(&inputs.seed)?,
                d.upload(&inputs.counter)?,
            );
            let mut ids = d.alloc::<u32>(rows)?;
            let mut probs = if want_probs { Some(d.alloc::<f32>(rows * vocab)?) } else { None };
            let rp = RowParams { temperature: &temperature, top_k: &top_k, top_p: &top_p, seed: &seed };
            let ctr = RowCounters { counter: &counter, stream: stream.unwrap_or(TARGET_STREAM) };
            sampling::sample_rows(d, &ws.logits, &rp, &ctr, &mut ids, probs.as_mut(), rows, vocab)?;
            if !chains.seqs.is_empty() {
                let probs = probs.as_ref().ok_or_else(|| EngineError::Backend("forward_pick: chains without probs".into()))?;
                let host_q = d.upload(&host_q)?;
                let host_base = ptr(d, &host_q);
                let q_rows: Vec<u64> = chains
                    .q
                    .iter()
                    .map(|q| match *q {
                        QRef::OneHot => 0,
                        QRef::Device(addr) => addr,
                        QRef::Host(i) => host_base + (i * vocab * 4) as u64,
                    })
                    .collect();
                let n = chains.seqs.len();
                let (target_row, draft_rows, draft_tokens, num_drafts, cseed, ccounter) = (
                    d.upload(&chains.target_row)?,
                    d.upload(&q_rows)?,
                    d.upload(&chains.draft_tokens)?,
                    d.upload(&chains.num_drafts)?,
                    d.upload(&chains.seed)?,
                    d.upload(&chains.counter)?,
                );
                let mut accepted = d.alloc::<u32>(n)?;
                let mut out_tokens = d.alloc::<u32>(n * (max_draft + 1))?;
                let b = ChainRows {
                    target: probs,
                    target_rows: rows,
                    target_row: &target_row,
                    draft_rows: &draft_rows,
                    draft_tokens: &draft_tokens,
                    num_drafts: &num_drafts,
                    seed: &cseed,
                    counter: &ccounter,
                    rows: n,
                    vocab,
                    max_draft,
                };
                // SAFETY: each q address is a row of a live buffer: a `DeviceProbRows` the pick
                // holds through its `ProbRow` for this whole call (it synchronises below), or
                // `host_q`, alive until the end of this block; nothing writes them meanwhile
                // (a drafter writes fresh buffers each step). Rows of chain r lie inside
                // `probs` by `check_picks` (L + 1 rows from its first).
                unsafe { sampling::verify_chain_rows(d, &b, &mut ChainOut { accepted: &mut accepted, tokens: &mut out_tokens }) }?;
                chain_out = (d.download(&accepted, n)?, d.download(&out_tokens, n * (max_draft + 1))?);
                d.sync()?; // before host_q and the q rows may go
            }
            tokens = d.download(&ids, rows)?;
            d.sync()?;
            kept = probs.map(|buf| Arc::new(DeviceProbRows { buf, rows, vocab, stream: Arc::clone(&d.stream) }) as Arc<dyn ProbRows>);
        } else {
            self.dev.sync()?;
        }
        drop(ran.step); // after the synchronising reads: the kernels are done with its inputs
        let mut chain_of = vec![None; picks.len()];
        for (c, &s) in chains.seqs.iter().enumerate() {
            chain_of[s] = Some(c);
        }
        picks
            .iter()
            .enumerate()
            .map(|(s, pick)| {
                let (a, b) = (ran.row_start[s], ran.row_start[s + 1]);
                Ok(match pick {
                    Pick::Skip => Picked::Skip,
                    Pick::Draw { keep, .. } => Picked::Drawn {
                        tokens: tokens[a..b].to_vec(),
                        probs: match (keep, &kept) {
                            (true, Some(k)) => Some((a..b).map(|index| ProbRow { rows: Arc::clone(k), index }).collect()),
                            _ => None,
                        },
                    },
                    Pick::Chain { .. } => {
                        let c = chain_of[s].ok_or_else(|| EngineError::Backend("forward_pick: a chain went missing".into()))?;
                        let accepted = chain_out.0[c] as usize;
                        Picked::Chain { accepted, next: chain_out.1[c * (max_draft + 1) + accepted] }
                    }
                })
            })
            .collect()
    }

    /// Where chain verification reads a q row: a device row in place, a host row (or one on
    /// another kind of device) appended to `host_q` for one upload.
    fn q_ref(&self, row: &ProbRow, vocab: usize, host_q: &mut Vec<f32>) -> Result<QRef> {
        if row.rows.vocab() != vocab || row.index >= row.rows.num_rows() {
            return Err(EngineError::Backend(format!(
                "a q row {} of {} rows of vocabulary {} for a target of vocabulary {vocab}",
                row.index,
                row.rows.num_rows(),
                row.rows.vocab()
            )));
        }
        let same_gpu = |r: &DeviceProbRows| r.stream.context().ordinal() == self.dev.ctx.ordinal();
        if let Some(dev_rows) = row.rows.as_any().downcast_ref::<DeviceProbRows>().filter(|r| same_gpu(r)) {
            return Ok(QRef::Device(ptr(&self.dev, &dev_rows.buf) + (row.index * vocab * 4) as u64));
        }
        let at = host_q.len() / vocab;
        match row.rows.as_any().downcast_ref::<HostProbRows>().and_then(|h| h.host_row(row.index)) {
            Some(r) => host_q.extend_from_slice(r),
            None => host_q.extend(row.rows.row_to_host(row.index)?),
        }
        Ok(QRef::Host(at))
    }
}
