//! GPU checks of `csrc/sampling.cu` for `vpd gpu-check`: every token of the fused sampler and
//! of chain verification against the CPU form of the same algorithm
//! (`vpd_sampling::kernel_ref`, same Philox numbers, same fixed-point masses), so the tolerance
//! is zero mismatches; then frequency tests on the device (many rows, fixed seeds) against the
//! target distribution with the Bernstein bound of vpd-sampling's statistical tests (per-bin
//! failure probability 1e-10, so they are never flaky).
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vpd_sampling::kernel_ref::{sample_ref, verify_chain_ref};
use vpd_sampling::{processed_probs, verify_chain_greedy, Sampler, SamplingParams};

use super::check::CheckRow;
use super::device::Device;
use super::sampling::{self, ChainBatch, ChainOut, RowParams};
use crate::error::{EngineError, Result};

fn logits_row(rng: &mut ChaCha8Rng, v: usize, kind: usize) -> Vec<f32> {
    let mut x: Vec<f32> = (0..v).map(|_| rng.random::<f32>() * 8.0 - 4.0).collect();
    match kind % 4 {
        1 => x.iter_mut().for_each(|e| *e = (*e * 2.0).round()), // many ties
        2 if v > 2 => {
            x[1] = f32::NAN;
            x[v - 1] = f32::NEG_INFINITY;
        }
        _ => {}
    }
    x
}

fn row_params(i: usize, seed: u64) -> SamplingParams {
    let (temperature, top_k, top_p) = match i % 7 {
        0 => (0.0, 0, 1.0),
        1 => (1.0, 0, 1.0),
        2 => (0.7, 50, 1.0),
        3 => (1.0, 0, 0.9),
        4 => (0.8, 40, 0.7),
        5 => (1.3, 1, 1.0),
        _ => (1.0, 0, 1e-4),
    };
    SamplingParams { temperature, top_k, top_p, seed: seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) }
}

fn run_sampler(dev: &Device, logits: &[f32], ps: &[SamplingParams], v: usize, offset: u64) -> Result<Vec<u32>> {
    let rows = ps.len();
    let (t, k, p, s) = (
        dev.upload(&ps.iter().map(|p| p.temperature).collect::<Vec<_>>())?,
        dev.upload(&ps.iter().map(|p| p.top_k.min(u32::MAX as usize) as u32).collect::<Vec<_>>())?,
        dev.upload(&ps.iter().map(|p| p.top_p).collect::<Vec<_>>())?,
        dev.upload(&ps.iter().map(|p| p.seed).collect::<Vec<_>>())?,
    );
    let d_logits = dev.upload(logits)?;
    let mut out = dev.upload(&vec![u32::MAX; rows])?;
    let rp = RowParams { temperature: &t, top_k: &k, top_p: &p, seed: &s };
    sampling::sample(dev, &d_logits, &rp, &mut out, rows, v, offset)?;
    dev.download(&out, rows)
}

/// Everything in this module, as check rows.
///
/// # Errors
/// A device failure; mismatches are rows with `pass: false`.
pub fn sampling_checks(dev: &Device, seed: u64) -> Result<Vec<CheckRow>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5a5a);
    let mut rows = Vec::new();
    // Fused sampler, token for token.
    for &(n, v) in &[(1usize, 1usize), (7, 17), (99, 1000), (7, 128_256), (99, 17)] {
        let logits: Vec<f32> = (0..n).flat_map(|i| logits_row(&mut rng, v, i)).collect();
        let ps: Vec<SamplingParams> = (0..n).map(|i| row_params(i + v, seed)).collect();
        let offset = rng.random::<u32>() as u64;
        let got = run_sampler(dev, &logits, &ps, v, offset)?;
        let bad = (0..n).filter(|&i| got[i] != sample_ref(&logits[i * v..][..v], &ps[i], offset, i as u32)).count();
        rows.push(CheckRow::new("sample tokens", format!("rows={n} V={v} (mismatches)"), bad as f64, 0.0));
    }
    rows.extend(chain_checks(dev, &mut rng)?);
    rows.extend(frequency_checks(dev, seed)?);
    // Bad shapes are errors, not launches.
    let d = dev.upload(&[0u32; 4])?;
    let f = dev.upload(&[0f32; 4])?;
    let (mut a, mut t) = (dev.upload(&[0u32; 4])?, dev.upload(&[0u32; 40])?);
    let bad_l = ChainBatch { target: &f, draft_tokens: &d, num_drafts: &d, rows: 0, vocab: 4, max_draft: 17 };
    let bad_v = ChainBatch { vocab: 0, max_draft: 1, ..bad_l };
    let refused = [&bad_l, &bad_v].iter().all(|b| {
        matches!(
            sampling::verify_chain_greedy(dev, b, &mut ChainOut { accepted: &mut a, tokens: &mut t }),
            Err(EngineError::UnsupportedShape { .. })
        )
    });
    rows.push(CheckRow::new("sampling bad shapes refused", "L=17, V=0".into(), f64::from(u8::from(!refused)), 0.0));
    Ok(rows)
}

/// A processed distribution and a nearby drafter distribution (so acceptance is mixed).
pub(super) fn p_and_q(rng: &mut ChaCha8Rng, v: usize, kind: usize) -> (Vec<f32>, Vec<f32>) {
    let x: Vec<f32> = (0..v).map(|_| rng.random::<f32>() * 6.0).collect();
    let y: Vec<f32> = x.iter().map(|&e| e + rng.random::<f32>() * 1.5).collect();
    let pp = SamplingParams { temperature: 1.0, top_k: if kind % 3 == 1 { 20 } else { 0 }, top_p: 1.0, seed: 0 };
    let p = processed_probs(&x, &pp);
    let q = if kind % 5 == 4 { p.clone() } else { processed_probs(&y, &SamplingParams { top_k: 0, ..pp }) };
    (p, q)
}

struct ChainCase {
    target: Vec<f32>,
    draft: Vec<f32>,
    tokens: Vec<u32>,
    lens: Vec<u32>,
}

fn chain_case(rng: &mut ChaCha8Rng, n: usize, v: usize, l: usize) -> ChainCase {
    let mut c = ChainCase { target: Vec::new(), draft: Vec::new(), tokens: Vec::new(), lens: Vec::new() };
    let mut s = Sampler::new(rng.random());
    for r in 0..n {
        let len = if l == 0 { 0 } else { (r * 7 + 3) % (l + 1) };
        for i in 0..=l {
            let (p, q) = p_and_q(rng, v, r + i);
            c.target.extend_from_slice(&p);
            if i < l {
                c.tokens.push(if i < len { s.sample_probs(&q) } else { 0 });
                c.draft.extend_from_slice(&q);
            }
        }
        c.lens.push(len as u32);
    }
    c
}

fn chain_checks(dev: &Device, rng: &mut ChaCha8Rng) -> Result<Vec<CheckRow>> {
    let mut rows = Vec::new();
    for &(n, v, l) in &[(1usize, 1usize, 4usize), (7, 17, 16), (99, 1000, 4), (7, 128_256, 4), (99, 17, 0), (3, 111, 16)] {
        let c = chain_case(rng, n, v, l);
        let (t, q, tok, len) = (dev.upload(&c.target)?, dev.upload(&c.draft)?, dev.upload(&c.tokens)?, dev.upload(&c.lens)?);
        let seeds: Vec<u64> = (0..n).map(|_| rng.random()).collect();
        let d_seed = dev.upload(&seeds)?;
        let b = ChainBatch { target: &t, draft_tokens: &tok, num_drafts: &len, rows: n, vocab: v, max_draft: l };
        let offset = 12_345;
        let mut bad = [0usize; 2];
        for greedy in [false, true] {
            let (mut acc, mut out) = (dev.upload(&vec![u32::MAX; n])?, dev.upload(&vec![u32::MAX; n * (l + 1)])?);
            let mut o = ChainOut { accepted: &mut acc, tokens: &mut out };
            if greedy {
                sampling::verify_chain_greedy(dev, &b, &mut o)?;
            } else {
                sampling::verify_chain(dev, &b, &q, &d_seed, &mut o, offset)?;
            }
            let (acc, out) = (dev.download(&acc, n)?, dev.download(&out, n * (l + 1))?);
            for r in 0..n {
                let len = c.lens[r] as usize;
                let trows: Vec<&[f32]> = (0..=len).map(|i| &c.target[(r * (l + 1) + i) * v..][..v]).collect();
                let qrows: Vec<&[f32]> = (0..len).map(|i| &c.draft[(r * l + i) * v..][..v]).collect();
                let drafts = &c.tokens[r * l..][..len];
                let want = if greedy {
                    verify_chain_greedy(&trows, drafts)
                } else {
                    verify_chain_ref(&trows, &qrows, drafts, seeds[r], offset, r as u32)
                }
                .map_err(|e| EngineError::Backend(format!("sampling check input: {e}")))?;
                let a = acc[r] as usize;
                let row_out = &out[r * (l + 1)..][..l + 1];
                let ok = a == want.accepted && row_out[..a] == drafts[..a] && row_out[a] == want.next_token;
                bad[usize::from(greedy)] += usize::from(!ok);
            }
        }
        let size = format!("rows={n} V={v} L<={l} (mismatches)");
        rows.push(CheckRow::new("chain verify tokens", size.clone(), bad[0] as f64, 0.0));
        rows.push(CheckRow::new("chain verify greedy tokens", size, bad[1] as f64, 0.0));
    }
    Ok(rows)
}

/// Bernstein bound (as in vpd-sampling's tests): the worst |count - N p| over bins divided by
/// its bound t(p), which must be <= 1; a p = 0 bin with a count gives infinity.
pub(super) fn bernstein_ratio(counts: &[u64], probs: &[f32]) -> f64 {
    let n: u64 = counts.iter().sum();
    let total: f64 = probs.iter().map(|&x| f64::from(x.max(0.0))).sum();
    let l = (2.0f64 / 1e-10).ln();
    let mut worst = 0.0f64;
    for (&c, &x) in counts.iter().zip(probs) {
        let p = f64::from(x.max(0.0)) / total;
        if p == 0.0 {
            if c > 0 {
                return f64::INFINITY;
            }
            continue;
        }
        let mean = n as f64 * p;
        let t = l / 3.0 + (l * l / 9.0 + 2.0 * l * mean * (1.0 - p)).sqrt();
        worst = worst.max((c as f64 - mean).abs() / t);
    }
    worst
}

fn frequency_checks(dev: &Device, seed: u64) -> Result<Vec<CheckRow>> {
    let mut rows = Vec::new();
    let n = 100_000usize;
    // Sampler: every row the same logits, a different Philox counter.
    let v = 40;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xf00d);
    let x = logits_row(&mut rng, v, 0);
    for p in [SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0, seed: 7 }, SamplingParams { temperature: 0.7, top_k: 12, top_p: 0.9, seed: 8 }] {
        let logits: Vec<f32> = (0..n).flat_map(|_| x.iter().copied()).collect();
        let got = run_sampler(dev, &logits, &vec![p; n], v, 99)?;
        let mut counts = vec![0u64; v];
        got.iter().for_each(|&t| counts[(t as usize).min(v - 1)] += 1);
        let size = format!("rows={n} V={v} T={} k={} p={} (|dev|/bound)", p.temperature, p.top_k, p.top_p);
        rows.push(CheckRow::new("sample frequencies", size, bernstein_ratio(&counts, &processed_probs(&x, &p)), 1.0));
    }
    // Chain, L = 2: the first emitted token (accepted draft or residual draw) must follow p_1.
    let v = 30;
    let (p1, q1) = p_and_q(&mut rng, v, 0);
    let (p2, q2) = p_and_q(&mut rng, v, 1);
    let (p3, _) = p_and_q(&mut rng, v, 2);
    let mut s = Sampler::new(seed ^ 3);
    let mut tokens = Vec::with_capacity(2 * n);
    for _ in 0..n {
        tokens.push(s.sample_probs(&q1));
        tokens.push(s.sample_probs(&q2));
    }
    let target: Vec<f32> = (0..n).flat_map(|_| p1.iter().chain(&p2).chain(&p3).copied()).collect();
    let draft: Vec<f32> = (0..n).flat_map(|_| q1.iter().chain(&q2).copied()).collect();
    let (t, q, tok, len) = (dev.upload(&target)?, dev.upload(&draft)?, dev.upload(&tokens)?, dev.upload(&vec![2u32; n])?);
    let d_seed = dev.upload(&vec![seed; n])?;
    let (mut acc, mut out) = (dev.alloc::<u32>(n)?, dev.alloc::<u32>(3 * n)?);
    let b = ChainBatch { target: &t, draft_tokens: &tok, num_drafts: &len, rows: n, vocab: v, max_draft: 2 };
    sampling::verify_chain(dev, &b, &q, &d_seed, &mut ChainOut { accepted: &mut acc, tokens: &mut out }, 5)?;
    let out = dev.download(&out, 3 * n)?;
    let mut counts = vec![0u64; v];
    out.chunks_exact(3).for_each(|r| counts[(r[0] as usize).min(v - 1)] += 1);
    rows.push(CheckRow::new("chain first-token frequencies", format!("rows={n} V={v} L=2 (|dev|/bound)"), bernstein_ratio(&counts, &p1), 1.0));
    Ok(rows)
}
