//! Choosing tokens where the logits are: a step's rows become tokens (a draw under the
//! request's sampling parameters) or chain verification outcomes (exact speculative sampling,
//! Leviathan et al. 2023) on the backend that computed them, so that a GPU step hands back a
//! few integers instead of `4 · vocab` bytes a row, and a drafter's draft distributions q stay
//! on its device until the target verifies against them ([`ProbRows`]).
//!
//! The arithmetic is `vpd_sampling::kernel_ref`'s (fixed-point masses, Philox4x32-10), so every
//! backend gives the same tokens for the same logits: the CPU through [`pick_on_host`], the GPU
//! through `csrc/sampling.cu`. Draws are keyed by the request's seed and counted by position
//! ([`RowDraw`]), not by a row's place in the batch, so a request's sampled tokens do not depend
//! on which other requests share its steps.
use std::any::Any;
use std::fmt::Debug;
use std::sync::Arc;

use vpd_sampling::kernel_ref::{probs_ref, sample_ref, verify_chain_ref};
use vpd_sampling::SamplingParams;

use super::Logits;
use crate::error::{EngineError, Result};

/// Philox counter word 0 of the target's draws and verification.
pub const TARGET_STREAM: u32 = 0;
/// Philox counter word 0 of a drafter's draws: independent of the target's accept tests at the
/// same positions, as exact rejection sampling needs.
pub const DRAFT_STREAM: u32 = 1;

/// How the tokens of one sequence's rows are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowDraw {
    /// Temperature (≤ 0: greedy), top-k, top-p; `seed` is the Philox key.
    pub sampling: SamplingParams,
    /// Philox counter of the sequence's first row: the position, in the request's context, of
    /// the token that row decides. Row `j` uses `counter + j`.
    pub counter: u64,
    /// [`TARGET_STREAM`] or [`DRAFT_STREAM`]. A chain always verifies on the target's stream,
    /// whatever this says.
    pub stream: u32,
}

/// Processed probability rows kept where they were computed (a drafter's q, on its GPU), for a
/// later chain verification on the same device.
pub trait ProbRows: Send + Sync + Debug {
    fn num_rows(&self) -> usize;
    fn vocab(&self) -> usize;
    /// Row `i`, where it lives in host memory.
    fn host_row(&self, i: usize) -> Option<&[f32]> {
        let _ = i;
        None
    }
    /// Row `i` copied to the host (the slow path: host verification, logprobs).
    ///
    /// # Errors
    /// `i` out of range, or a failed device copy.
    fn row_to_host(&self, i: usize) -> Result<Vec<f32>>;
    fn as_any(&self) -> &dyn Any;
}

/// Rows in host memory (the CPU backend, and host-side drafting).
#[derive(Debug)]
pub struct HostProbRows {
    pub vocab: usize,
    /// `[rows, vocab]`.
    pub data: Vec<f32>,
}

impl ProbRows for HostProbRows {
    fn num_rows(&self) -> usize {
        self.data.len().checked_div(self.vocab).unwrap_or(0)
    }
    fn vocab(&self) -> usize {
        self.vocab
    }
    fn host_row(&self, i: usize) -> Option<&[f32]> {
        self.data.get(i * self.vocab..(i + 1) * self.vocab)
    }
    fn row_to_host(&self, i: usize) -> Result<Vec<f32>> {
        self.host_row(i)
            .map(<[f32]>::to_vec)
            .ok_or_else(|| EngineError::Backend(format!("probability row {i} of {}", self.num_rows())))
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// One row of a [`ProbRows`].
#[derive(Debug, Clone)]
pub struct ProbRow {
    pub rows: Arc<dyn ProbRows>,
    pub index: usize,
}

impl ProbRow {
    /// A single host row.
    pub fn host(row: Vec<f32>) -> Self {
        Self { rows: Arc::new(HostProbRows { vocab: row.len(), data: row }), index: 0 }
    }

    /// The row in host memory: borrowed where it lives there, copied otherwise.
    ///
    /// # Errors
    /// As [`ProbRows::row_to_host`].
    pub fn to_host(&self) -> Result<std::borrow::Cow<'_, [f32]>> {
        match self.rows.host_row(self.index) {
            Some(r) => Ok(std::borrow::Cow::Borrowed(r)),
            None => self.rows.row_to_host(self.index).map(std::borrow::Cow::Owned),
        }
    }
}

/// What one plan sequence wants from its rows.
#[derive(Debug, Clone)]
pub enum Pick<'a> {
    /// Nothing (a prefill chunk that is not the prompt's last, which has no rows).
    Skip,
    /// One token per row under `draw` (greedy: the argmax); with `keep`, every row's processed
    /// distribution is kept too (a drafter's q).
    Draw { draw: RowDraw, keep: bool },
    /// Chain speculative sampling: the sequence's rows are the target's at the newest committed
    /// token and after each of `drafts`; `q[i]` is the distribution `drafts[i]` was drawn from
    /// (`None`: a deterministic draft, checked as one-hot). `draw.counter` is the position of
    /// the first draft.
    Chain { drafts: &'a [u32], q: &'a [Option<ProbRow>], draw: RowDraw },
}

/// What a [`Pick`] gave.
#[derive(Debug, Clone)]
pub enum Picked {
    Skip,
    Drawn {
        tokens: Vec<u32>,
        /// With `keep`: each row's processed distribution.
        probs: Option<Vec<ProbRow>>,
    },
    /// `accepted` drafts, then `next` (the residual draw, or the bonus token).
    Chain { accepted: usize, next: u32 },
}

impl Picked {
    /// The tokens of a [`Picked::Drawn`].
    ///
    /// # Errors
    /// Any other outcome (a caller and backend that disagree about the plan).
    pub fn drawn(&self) -> Result<&[u32]> {
        match self {
            Self::Drawn { tokens, .. } => Ok(tokens),
            other => Err(EngineError::Backend(format!("expected drawn tokens, got {other:?}"))),
        }
    }
}

/// Checks that `picks` match the step's rows (one pick per sequence; a chain of L drafts over
/// L + 1 rows; nothing to draw from a sequence with no rows).
///
/// # Errors
/// A mismatch, named.
pub fn check_picks(row_start: &[usize], picks: &[Pick<'_>]) -> Result<()> {
    if row_start.len() != picks.len() + 1 {
        return Err(EngineError::Backend(format!("{} picks for {} sequences", picks.len(), row_start.len().saturating_sub(1))));
    }
    for (s, pick) in picks.iter().enumerate() {
        let rows = row_start[s + 1] - row_start[s];
        match pick {
            Pick::Skip => {}
            Pick::Draw { .. } if rows == 0 => {
                return Err(EngineError::Backend(format!("sequence {s}: a draw from a step that returned no rows")));
            }
            Pick::Draw { .. } => {}
            Pick::Chain { drafts, q, .. } => {
                if rows != drafts.len() + 1 || q.len() != drafts.len() {
                    return Err(EngineError::Backend(format!(
                        "sequence {s}: a chain of {} drafts ({} q rows) over {rows} rows",
                        drafts.len(),
                        q.len()
                    )));
                }
            }
        }
    }
    Ok(())
}

/// [`super::Backend::forward_pick`] on logits rows in host memory, with the kernels' arithmetic.
///
/// # Errors
/// Picks that do not match the rows, or a draft token outside the vocabulary.
pub fn pick_on_host(logits: &Logits, picks: &[Pick<'_>]) -> Result<Vec<Picked>> {
    check_picks(&logits.row_start, picks)?;
    let vocab = logits.vocab;
    picks
        .iter()
        .enumerate()
        .map(|(s, pick)| {
            let rows: Vec<&[f32]> = logits.seq_rows(s).collect();
            Ok(match pick {
                Pick::Skip => Picked::Skip,
                Pick::Draw { draw, keep } => {
                    let tokens = rows
                        .iter()
                        .enumerate()
                        .map(|(j, row)| sample_ref(row, &draw.sampling, draw.counter + j as u64, draw.stream))
                        .collect();
                    let probs = keep.then(|| {
                        let data: Vec<f32> = rows.iter().flat_map(|row| probs_ref(row, &draw.sampling)).collect();
                        let kept: Arc<dyn ProbRows> = Arc::new(HostProbRows { vocab, data });
                        (0..rows.len()).map(|index| ProbRow { rows: Arc::clone(&kept), index }).collect()
                    });
                    Picked::Drawn { tokens, probs }
                }
                Pick::Chain { drafts, q, draw } => {
                    let p: Vec<Vec<f32>> = rows.iter().map(|row| probs_ref(row, &draw.sampling)).collect();
                    let p: Vec<&[f32]> = p.iter().map(Vec::as_slice).collect();
                    let q: Vec<std::borrow::Cow<'_, [f32]>> = q
                        .iter()
                        .zip(drafts.iter())
                        .map(|(q, &x)| match q {
                            Some(row) => row.to_host(),
                            None => Ok(std::borrow::Cow::Owned(vpd_sampling::one_hot(vocab, x))),
                        })
                        .collect::<Result<_>>()?;
                    let q: Vec<&[f32]> = q.iter().map(|c| c.as_ref()).collect();
                    let out = verify_chain_ref(&p, &q, drafts, draw.sampling.seed, draw.counter, TARGET_STREAM)
                        .map_err(|e| EngineError::Backend(format!("chain verification: {e}")))?;
                    Picked::Chain { accepted: out.accepted, next: out.next_token }
                }
            })
        })
        .collect()
}

impl Pick<'_> {
    /// Whether the pick needs nothing but each row's argmax (greedy, no kept rows).
    pub fn is_greedy(&self) -> bool {
        match self {
            Self::Skip => true,
            Self::Draw { draw, keep } => !keep && draw.sampling.is_greedy(),
            Self::Chain { draw, .. } => draw.sampling.is_greedy(),
        }
    }
}

/// The outcomes of greedy picks from each row's argmax: a draw is the argmax; a chain accepts
/// while the draft equals the row's argmax and then emits the argmax. This is what
/// [`pick_on_host`] gives for greedy picks (a greedy row's distribution is one-hot at its
/// argmax), without the distributions.
///
/// # Errors
/// Picks that do not match the rows, or a pick that is not greedy.
pub fn picked_from_argmax(a: &super::Argmax, picks: &[Pick<'_>]) -> Result<Vec<Picked>> {
    check_picks(&a.row_start, picks)?;
    picks
        .iter()
        .enumerate()
        .map(|(s, pick)| {
            let ids = a.seq_ids(s);
            Ok(match pick {
                _ if !pick.is_greedy() => return Err(EngineError::Backend(format!("sequence {s}: a sampled pick from argmax rows"))),
                Pick::Skip => Picked::Skip,
                Pick::Draw { .. } => Picked::Drawn { tokens: ids.to_vec(), probs: None },
                Pick::Chain { drafts, .. } => {
                    let accepted = drafts.iter().zip(ids).take_while(|(x, best)| x == best).count();
                    Picked::Chain { accepted, next: ids[accepted] }
                }
            })
        })
        .collect()
}

/// Runs `plan` through layers `0..num_layers` and its picks the cheapest way they allow: the
/// argmax rows alone when every pick is greedy ([`super::Backend::forward_argmax`]), the picks
/// on the backend otherwise ([`super::Backend::forward_pick`]); and with `want_logits` (a
/// request that reports logprobs), the whole logits rows to the host, picked there with the
/// same arithmetic. Every way gives the same tokens for the same logits.
///
/// # Errors
/// As the backend call, and picks that do not match the plan's rows.
pub fn forward_picks<B: super::Backend + ?Sized>(
    backend: &mut B,
    plan: &super::StepPlan,
    num_layers: usize,
    picks: &[Pick<'_>],
    want_logits: bool,
) -> Result<(Vec<Picked>, Option<Logits>)> {
    if want_logits {
        let logits = backend.forward_layers(plan, num_layers)?;
        return Ok((pick_on_host(&logits, picks)?, Some(logits)));
    }
    if picks.iter().all(Pick::is_greedy) {
        let a = backend.forward_argmax(plan, num_layers)?;
        return Ok((picked_from_argmax(&a, picks)?, None));
    }
    Ok((backend.forward_pick(plan, num_layers, picks)?, None))
}

#[cfg(test)]
mod tests {
    use vpd_sampling::kernel_ref::{probs_ref, sample_ref, verify_chain_ref};
    use vpd_sampling::{one_hot, processed_probs, SamplingParams};

    use super::*;
    use crate::backend::Argmax;

    const V: usize = 12;

    fn logits(rows: usize, salt: u64) -> Vec<f32> {
        (0..rows * V).map(|i| (((i as u64 * 2_654_435_761 + salt * 97) % 1000) as f32) / 250.0 - 2.0).collect()
    }

    fn sampled(seed: u64) -> SamplingParams {
        SamplingParams { temperature: 0.8, top_k: 9, top_p: 0.95, seed }
    }

    #[test]
    fn draws_and_kept_rows_are_the_kernel_reference_row_by_row() {
        let l = Logits { vocab: V, data: logits(3, 1), row_start: vec![0, 2, 3] };
        let draw = RowDraw { sampling: sampled(7), counter: 40, stream: DRAFT_STREAM };
        let picks = [Pick::Draw { draw, keep: true }, Pick::Draw { draw: RowDraw { counter: 9, ..draw }, keep: false }];
        let got = pick_on_host(&l, &picks).unwrap();
        let rows: Vec<&[f32]> = l.data.chunks(V).collect();
        let Picked::Drawn { tokens, probs: Some(probs) } = &got[0] else { panic!("{:?}", got[0]) };
        assert_eq!(tokens, &[sample_ref(rows[0], &draw.sampling, 40, DRAFT_STREAM), sample_ref(rows[1], &draw.sampling, 41, DRAFT_STREAM)]);
        assert_eq!(probs[1].to_host().unwrap().as_ref(), probs_ref(rows[1], &draw.sampling).as_slice());
        assert_eq!(got[1].drawn().unwrap(), &[sample_ref(rows[2], &draw.sampling, 9, DRAFT_STREAM)]);
        assert!(matches!(got[1], Picked::Drawn { probs: None, .. }));
    }

    #[test]
    fn chains_are_the_kernel_reference_with_deterministic_drafts_one_hot() {
        let l = Logits { vocab: V, data: logits(4, 2), row_start: vec![0, 4] };
        let draw = RowDraw { sampling: sampled(3), counter: 17, stream: TARGET_STREAM };
        let q1 = probs_ref(&logits(1, 9), &draw.sampling);
        let q = [Some(ProbRow::host(q1.clone())), None, Some(ProbRow::host(q1.clone()))];
        let drafts = [2u32, 5, 7];
        for seed in 0..50 {
            let draw = RowDraw { sampling: sampled(seed), ..draw };
            let got = pick_on_host(&l, &[Pick::Chain { drafts: &drafts, q: &q, draw }]).unwrap();
            let p: Vec<Vec<f32>> = l.data.chunks(V).map(|r| probs_ref(r, &draw.sampling)).collect();
            let p: Vec<&[f32]> = p.iter().map(Vec::as_slice).collect();
            let oh = one_hot(V, 5);
            let want = verify_chain_ref(&p, &[&q1, &oh, &q1], &drafts, seed, 17, TARGET_STREAM).unwrap();
            assert!(matches!(got[0], Picked::Chain { accepted, next } if accepted == want.accepted && next == want.next_token));
        }
    }

    #[test]
    fn greedy_picks_from_argmax_rows_equal_picks_from_logits() {
        let l = Logits { vocab: V, data: logits(7, 3), row_start: vec![0, 1, 4, 4, 7] };
        let a = Argmax::of(&l);
        let g = RowDraw { sampling: SamplingParams::greedy(), counter: 5, stream: TARGET_STREAM };
        let best = a.seq_ids(1).to_vec();
        // One chain that matches its argmax twice (and gets the bonus), one that misses at
        // once, with any q.
        let hit = [best[0], best[1]];
        let miss: [u32; 2] = [(a.seq_ids(3)[0] + 1) % V as u32, 0];
        let q3 = [None, Some(ProbRow::host(vec![1.0 / V as f32; V]))];
        let q2 = [Some(ProbRow::host(one_hot(V, miss[0]))), None];
        let picks = [
            Pick::Draw { draw: g, keep: false },
            Pick::Chain { drafts: &hit, q: &q3, draw: g },
            Pick::Skip,
            Pick::Chain { drafts: &miss, q: &q2, draw: g },
        ];
        let fast = picked_from_argmax(&a, &picks).unwrap();
        let slow = pick_on_host(&l, &picks).unwrap();
        assert_eq!(format!("{fast:?}"), format!("{slow:?}"));
        assert!(matches!(fast[1], Picked::Chain { accepted: 2, .. }) && matches!(fast[3], Picked::Chain { accepted: 0, .. }));
        // A sampled pick cannot be answered from argmax rows.
        let s = [Pick::Draw { draw: RowDraw { sampling: sampled(1), ..g }, keep: false }];
        assert!(picked_from_argmax(&Argmax { ids: vec![0], row_start: vec![0, 1] }, &s).is_err());
    }

    #[test]
    fn picks_that_do_not_match_the_rows_are_errors() {
        let l = Logits { vocab: V, data: logits(3, 4), row_start: vec![0, 3] };
        let draw = RowDraw { sampling: sampled(1), counter: 0, stream: TARGET_STREAM };
        assert!(pick_on_host(&l, &[]).is_err(), "a pick per sequence");
        let q = [None];
        assert!(pick_on_host(&l, &[Pick::Chain { drafts: &[1], q: &q, draw }]).is_err(), "L + 1 rows");
        let none = Logits { vocab: V, data: Vec::new(), row_start: vec![0, 0] };
        assert!(pick_on_host(&none, &[Pick::Draw { draw, keep: false }]).is_err(), "no row to draw from");
        assert!(pick_on_host(&none, &[Pick::Skip]).is_ok());
        let bad = [V as u32 + 3, 0];
        let q2 = [None, None];
        assert!(pick_on_host(&l, &[Pick::Chain { drafts: &bad, q: &q2, draw }]).is_err(), "a draft outside the vocabulary");
    }

    /// A draft drawn by a kept-row pick (the drafter's side) and then verified by a chain pick
    /// (the target's side) emits, at the first position, exactly the target's processed
    /// distribution: a Bernstein bound with per-bin failure probability 1e-10, fixed seeds.
    #[test]
    fn a_drafted_then_verified_token_follows_the_target_distribution() {
        let sp = SamplingParams { temperature: 0.9, top_k: 0, top_p: 0.9, seed: 0 };
        let target = Logits { vocab: V, data: logits(2, 5), row_start: vec![0, 2] };
        let draft = Logits { vocab: V, data: logits(1, 6), row_start: vec![0, 1] };
        let n = 40_000u64;
        let mut counts = vec![0u64; V];
        for trial in 0..n {
            let sampling = SamplingParams { seed: trial.wrapping_mul(0x9E37_79B9_7F4A_7C15), ..sp };
            let d = RowDraw { sampling, counter: 11, stream: DRAFT_STREAM };
            let drafted = pick_on_host(&draft, &[Pick::Draw { draw: d, keep: true }]).unwrap();
            let Picked::Drawn { tokens, probs: Some(q) } = &drafted[0] else { panic!() };
            let q = [Some(q[0].clone())];
            let t = RowDraw { stream: TARGET_STREAM, ..d };
            let out = pick_on_host(&target, &[Pick::Chain { drafts: tokens, q: &q, draw: t }]).unwrap();
            let first = match out[0] {
                Picked::Chain { accepted: 1, .. } => tokens[0],
                Picked::Chain { next, .. } => next,
                _ => panic!(),
            };
            counts[first as usize] += 1;
        }
        let p = processed_probs(&target.data[..V], &sp);
        let l = (2.0f64 / 1e-10).ln();
        for (c, &pi) in counts.iter().zip(&p) {
            let mean = n as f64 * f64::from(pi);
            let bound = l / 3.0 + (l * l / 9.0 + 2.0 * l * mean * (1.0 - f64::from(pi))).sqrt();
            assert!((*c as f64 - mean).abs() <= bound, "{counts:?} against {p:?}");
            if pi == 0.0 {
                assert_eq!(*c, 0, "a token outside the target's kept set");
            }
        }
    }
}
