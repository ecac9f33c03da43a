//! GPU checks of the engine's sampled path for `vpd gpu-check`: the fused sampler with a Philox
//! counter per row and its processed rows (a drafter's q), chain verification over a step's
//! row layout with q rows anywhere on the device (and one-hot for deterministic drafts), and
//! [`Backend::forward_pick`] on a model step against [`pick_on_host`] over the same step's
//! logits. All against `vpd_sampling::kernel_ref`, so the tolerance is zero mismatches.
#![allow(unsafe_code)]
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vpd_sampling::kernel_ref::{probs_ref, sample_ref, verify_chain_ref};
use vpd_sampling::{one_hot, Sampler, SamplingParams};

use super::check::CheckRow;
use super::device::{ptr, Device};
use super::sampling::{self, ChainOut, ChainRows, RowCounters, RowParams};
use super::sampling_check::p_and_q;
use super::CudaBackend;
use crate::backend::pick::pick_on_host;
use crate::backend::{Backend, LogitsWanted, Pick, Picked, ProbRow, RowDraw, StepPlan, DRAFT_STREAM, TARGET_STREAM};
use crate::error::{EngineError, Result};

fn params(i: usize, seed: u64) -> SamplingParams {
    let (temperature, top_k, top_p) = match i % 5 {
        0 => (0.0, 0, 1.0),
        1 => (1.0, 0, 1.0),
        2 => (0.7, 20, 1.0),
        3 => (1.0, 0, 0.9),
        _ => (0.8, 30, 0.7),
    };
    SamplingParams { temperature, top_k, top_p, seed: seed.wrapping_add(i as u64) }
}

/// Everything in this module that needs no model, as check rows.
///
/// # Errors
/// A device failure; mismatches are rows with `pass: false`.
pub fn pick_kernel_checks(dev: &Device, seed: u64) -> Result<Vec<CheckRow>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x9c9c);
    let mut rows = Vec::new();
    // Sampler with per-row counters, on both streams, with the processed rows written.
    for &(n, v, stream) in &[(1usize, 1usize, TARGET_STREAM), (7, 17, DRAFT_STREAM), (99, 1000, TARGET_STREAM), (7, 128_256, DRAFT_STREAM)] {
        let logits: Vec<f32> = (0..n * v).map(|_| rng.random::<f32>() * 8.0 - 4.0).collect();
        let ps: Vec<SamplingParams> = (0..n).map(|i| params(i + v, seed)).collect();
        let counters: Vec<u64> = (0..n).map(|_| rng.random::<u32>() as u64).collect();
        let (t, k, p, s, c) = (
            dev.upload(&ps.iter().map(|p| p.temperature).collect::<Vec<_>>())?,
            dev.upload(&ps.iter().map(|p| p.top_k as u32).collect::<Vec<_>>())?,
            dev.upload(&ps.iter().map(|p| p.top_p).collect::<Vec<_>>())?,
            dev.upload(&ps.iter().map(|p| p.seed).collect::<Vec<_>>())?,
            dev.upload(&counters)?,
        );
        let d_logits = dev.upload(&logits)?;
        let mut out = dev.upload(&vec![u32::MAX; n])?;
        let mut probs = dev.upload(&vec![f32::NAN; n * v])?;
        let rp = RowParams { temperature: &t, top_k: &k, top_p: &p, seed: &s };
        sampling::sample_rows(dev, &d_logits, &rp, &RowCounters { counter: &c, stream }, &mut out, Some(&mut probs), n, v)?;
        let (got, got_probs) = (dev.download(&out, n)?, dev.download(&probs, n * v)?);
        let (mut bad_tok, mut bad_row) = (0usize, 0usize);
        for i in 0..n {
            let row = &logits[i * v..][..v];
            bad_tok += usize::from(got[i] != sample_ref(row, &ps[i], counters[i], stream));
            let want = probs_ref(row, &ps[i]);
            bad_row += usize::from(want.iter().zip(&got_probs[i * v..][..v]).any(|(a, b)| a.to_bits() != b.to_bits()));
        }
        let size = format!("rows={n} V={v} stream={stream} (mismatches)");
        rows.push(CheckRow::new("sample_rows tokens", size.clone(), bad_tok as f64, 0.0));
        rows.push(CheckRow::new("sample_rows probs rows", size, bad_row as f64, 0.0));
    }
    // Chains over a step's layout: L varies per chain, the target rows follow each other, q
    // rows sit in one device buffer in shuffled order, and some drafts are deterministic.
    for &(n, v, l) in &[(1usize, 17usize, 4usize), (7, 111, 16), (13, 1000, 4), (5, 128_256, 4)] {
        let lens: Vec<usize> = (0..n).map(|r| (r * 5 + 1) % (l + 1)).collect();
        let (mut target, mut qbuf, mut drafts) = (Vec::new(), Vec::new(), vec![0u32; n * l]);
        let mut target_row = Vec::new();
        let mut q_of: Vec<Option<usize>> = vec![None; n * l]; // index into qbuf rows
        let mut s = Sampler::new(rng.random());
        for r in 0..n {
            target_row.push((target.len() / v) as u32);
            for i in 0..=lens[r] {
                let (p, q) = p_and_q(&mut rng, v, r + i);
                target.extend_from_slice(&p);
                if i < lens[r] {
                    if (r + i) % 3 == 2 {
                        drafts[r * l + i] = rng.random_range(0..v as u32); // deterministic
                    } else {
                        drafts[r * l + i] = s.sample_probs(&q);
                        q_of[r * l + i] = Some(qbuf.len() / v);
                        qbuf.extend_from_slice(&q);
                    }
                }
            }
        }
        let rows_total = target.len() / v;
        let (d_target, d_q) = (dev.upload(&target)?, dev.upload(&qbuf)?);
        let base = ptr(dev, &d_q);
        let addrs: Vec<u64> = q_of.iter().map(|q| q.map_or(0, |j| base + (j * v * 4) as u64)).collect();
        let seeds: Vec<u64> = (0..n).map(|_| rng.random()).collect();
        let counters: Vec<u64> = (0..n).map(|_| rng.random::<u32>() as u64).collect();
        let nd: Vec<u32> = lens.iter().map(|&x| x as u32).collect();
        let (tr, dr, dt, dn, ds, dc) =
            (dev.upload(&target_row)?, dev.upload(&addrs)?, dev.upload(&drafts)?, dev.upload(&nd)?, dev.upload(&seeds)?, dev.upload(&counters)?);
        let (mut acc, mut out) = (dev.upload(&vec![u32::MAX; n])?, dev.upload(&vec![u32::MAX; n * (l + 1)])?);
        let b = ChainRows {
            target: &d_target,
            target_rows: rows_total,
            target_row: &tr,
            draft_rows: &dr,
            draft_tokens: &dt,
            num_drafts: &dn,
            seed: &ds,
            counter: &dc,
            rows: n,
            vocab: v,
            max_draft: l,
        };
        // SAFETY: every non-zero address is a row of `d_q`, alive and unwritten until the
        // downloads below synchronise.
        unsafe { sampling::verify_chain_rows(dev, &b, &mut ChainOut { accepted: &mut acc, tokens: &mut out }) }?;
        let (acc, out) = (dev.download(&acc, n)?, dev.download(&out, n * (l + 1))?);
        dev.sync()?;
        let mut bad = 0usize;
        for r in 0..n {
            let t0 = target_row[r] as usize;
            let p: Vec<&[f32]> = (0..=lens[r]).map(|i| &target[(t0 + i) * v..][..v]).collect();
            let d = &drafts[r * l..][..lens[r]];
            let q: Vec<Vec<f32>> = (0..lens[r])
                .map(|i| q_of[r * l + i].map_or_else(|| one_hot(v, d[i]), |j| qbuf[j * v..][..v].to_vec()))
                .collect();
            let q: Vec<&[f32]> = q.iter().map(Vec::as_slice).collect();
            let want = verify_chain_ref(&p, &q, d, seeds[r], counters[r], TARGET_STREAM)
                .map_err(|e| EngineError::Backend(format!("pick check input: {e}")))?;
            let a = acc[r] as usize;
            let row_out = &out[r * (l + 1)..][..l + 1];
            bad += usize::from(!(a == want.accepted && row_out[..a] == d[..a] && row_out[a] == want.next_token));
        }
        rows.push(CheckRow::new("chain verify by rows", format!("chains={n} V={v} L<={l} (mismatches)"), bad as f64, 0.0));
    }
    Ok(rows)
}

/// [`Backend::forward_pick`] on the device against [`pick_on_host`] over the logits of the same
/// step on the same backend (the step rewrites the same K/V): every draw, kept q row and chain
/// outcome equal. Chains verify against q rows the device kept in a first pick of the step
/// (and against host rows and deterministic drafts); tree sequences draw every row.
///
/// # Errors
/// A device failure; mismatches are rows with `pass: false`.
pub fn model_pick_check(gpu: &mut CudaBackend, step: &StepPlan, layers: usize, seed: u64) -> Result<Vec<CheckRow>> {
    let n = step.seqs.len();
    let draw = |s: usize, stream| RowDraw { sampling: params(s + 1, seed), counter: 1000 + 17 * s as u64, stream };
    // 1. The drafter's side: keep every row's distribution on the device.
    let keep: Vec<Pick<'_>> = step
        .seqs
        .iter()
        .enumerate()
        .map(|(s, q)| if q.logits == LogitsWanted::None { Pick::Skip } else { Pick::Draw { draw: draw(s, DRAFT_STREAM), keep: true } })
        .collect();
    let kept = gpu.forward_pick(step, layers, &keep)?;
    let q_pool: Vec<ProbRow> = kept.iter().filter_map(|k| if let Picked::Drawn { probs: Some(p), .. } = k { Some(p.clone()) } else { None }).flatten().collect();
    if q_pool.is_empty() {
        return Err(EngineError::Backend("model pick check: the step kept no rows".into()));
    }
    // 2. The target's side: chains where a sequence is a chain of several tokens.
    let mut chain_q: Vec<Vec<Option<ProbRow>>> = Vec::with_capacity(n);
    for (s, q) in step.seqs.iter().enumerate() {
        let l = q.tokens.len().saturating_sub(1);
        chain_q.push(
            (0..l)
                .map(|i| match (s + i) % 3 {
                    0 => Some(q_pool[(s * 7 + i) % q_pool.len()].clone()),
                    1 => Some(ProbRow::host(probs_ref(&vec![0.5; gpu.config.vocab_size], &SamplingParams::default()))),
                    _ => None,
                })
                .collect(),
        );
    }
    let picks: Vec<Pick<'_>> = step
        .seqs
        .iter()
        .enumerate()
        .map(|(s, q)| match q.logits {
            LogitsWanted::None => Pick::Skip,
            LogitsWanted::All if q.tree_parents.is_none() && q.tokens.len() > 1 => {
                Pick::Chain { drafts: &q.tokens[1..], q: &chain_q[s], draw: draw(s, TARGET_STREAM) }
            }
            _ => Pick::Draw { draw: draw(s, TARGET_STREAM), keep: false },
        })
        .collect();
    let chains = picks.iter().filter(|p| matches!(p, Pick::Chain { .. })).count();
    let got = gpu.forward_pick(step, layers, &picks)?;
    let logits = gpu.forward_layers(step, layers)?;
    let want = pick_on_host(&logits, &picks)?;
    let kept_want = pick_on_host(&logits, &keep)?;
    let same = |a: &Picked, b: &Picked| -> Result<bool> {
        Ok(match (a, b) {
            (Picked::Skip, Picked::Skip) => true,
            (Picked::Chain { accepted: x, next: y }, Picked::Chain { accepted: u, next: w }) => x == u && y == w,
            (Picked::Drawn { tokens: x, probs: px }, Picked::Drawn { tokens: y, probs: py }) => {
                let rows_same = match (px, py) {
                    (None, None) => true,
                    (Some(a), Some(b)) if a.len() == b.len() => {
                        let mut all = true;
                        for (ra, rb) in a.iter().zip(b) {
                            all &= ra.to_host()?.iter().zip(rb.to_host()?.iter()).all(|(x, y)| x.to_bits() == y.to_bits());
                        }
                        all
                    }
                    _ => false,
                };
                x == y && rows_same
            }
            _ => false,
        })
    };
    let mut bad = 0usize;
    for (a, b) in got.iter().zip(&want).chain(kept.iter().zip(&kept_want)) {
        bad += usize::from(!same(a, b)?);
    }
    Ok(vec![CheckRow::new(
        "model step forward_pick = host picks",
        format!("S={n} chains={chains} kept rows={} (sequences differing)", q_pool.len()),
        if got.len() == n { bad as f64 } else { f64::NAN },
        0.0,
    )])
}
