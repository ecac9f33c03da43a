//! Online step-cost model for the controller (ALGORITHMS.md, "Choosing L under load").
//!
//! - Draft step time is linear in the batch size: `d(b) = d0 + d1·b`.
//! - Verify time over T tokens of S sequences has a compute ridge R: nearly flat below it
//!   (memory-bound, the weights are read once), linear above it (compute-bound), plus a cost
//!   per sequence (its K/V context read by attention, its rows of bookkeeping):
//!   `v(T, S) = v0 + v1·T + v2·max(0, T − R) + v3·S`.
//!   Without the S term, forwards measured at small L (T ≈ 1.5·S under load) put the
//!   per-sequence cost into the per-token slope and price longer drafts too high (docs/perf.md,
//!   "High load again": about 70 µs a sequence on an H200 at 128 running requests).
//!
//! Both are fitted online by weighted least squares over exponentially forgotten normal
//! equations (forgetting factor [`FORGET`] per sample, so the model follows a drifting
//! device). The draft fit takes the prior's line as a few light pseudo-samples. The verify fit
//! pulls each coefficient toward the prior's on its own (ridge regression, Tikhonov): a
//! pseudo-sample at a thousand tokens and sequences would outweigh the data, by its leverage,
//! in the one direction that tells the per-token and per-sequence costs apart, where the
//! data's information is small (T/S varies only with the L mix); a separate pull keeps the
//! prior only where the data says nothing (above a ridge no forward reached; the split when
//! every forward has the same S). R is chosen from a fixed grid of candidates plus the
//! prior's ridge, by least residual, the prior's first so that it wins ties. Robustness:
//! non-finite or non-positive samples are ignored, and once a fit has data, a sample is
//! clipped to [¼, 4]× the prediction, so one stall cannot wreck it while a real change of cost
//! still gets through in a few samples.
//! Coefficients are clamped non-negative.

/// The cost curves before any measurement, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostPrior {
    /// `d0`: draft step time at batch 0 (launch and weight reads).
    pub draft_base_s: f64,
    /// `d1`: extra draft step time per sequence in the batch.
    pub draft_per_seq_s: f64,
    /// `v0`: verify forward time at 0 tokens (reading the target's weights).
    pub verify_base_s: f64,
    /// `v1`: verify time per token below the ridge.
    pub verify_per_token_s: f64,
    /// `v2`: extra verify time per token above the ridge.
    pub verify_per_token_above_ridge_s: f64,
    /// `R`: the compute ridge, in tokens.
    pub ridge_tokens: f64,
    /// `v3`: verify time per sequence in the forward, whatever its tokens.
    pub verify_per_seq_s: f64,
}

impl Default for CostPrior {
    /// Llama-3-8B target and a Llama-3.2-1B draft on an H100, as benches/cuda/decode_step.rs
    /// timed the forwards of a loaded runtime (256 cached positions, NVIDIA H100 80GB HBM3,
    /// 2026-12-06, copy 3028 GB/s in the same run; docs/perf.md, "The tail objective"): the 8B
    /// forward is 7.7 ms at 64 sequences of one token and grows by about 13 µs a token from
    /// there (cuBLAS at 64–256 rows is not flat below the compute ridge), 19 µs past about 192
    /// tokens, and 5 µs a sequence; the 1B draft step is 1.73 / 1.86 / 2.08 ms at 32 / 64 / 128
    /// sequences. (The prior before took tokens below a 260-token ridge as nearly free, 2 µs,
    /// and a controller that rarely varies L cannot tell per-token from per-sequence cost in
    /// its own samples, so it kept that and priced drafts too low.)
    fn default() -> Self {
        Self {
            draft_base_s: 1.6e-3,
            draft_per_seq_s: 4e-6,
            verify_base_s: 6.6e-3,
            verify_per_token_s: 13e-6,
            verify_per_token_above_ridge_s: 6e-6,
            ridge_tokens: 192.0,
            verify_per_seq_s: 5e-6,
        }
    }
}

/// An invalid [`CostPrior`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cost prior field {field} must be finite and {rule}, got {value}")]
pub struct CostPriorError {
    pub field: &'static str,
    pub rule: &'static str,
    pub value: f64,
}

/// Forgetting factor per sample: the fit remembers about 1 / (1 − 0.97) ≈ 33 samples.
pub const FORGET: f64 = 0.97;
/// Weight of each prior pseudo-sample.
const PRIOR_WEIGHT: f64 = 0.05;
/// Pull of each verify coefficient toward the prior's: the information of this many samples
/// at the prior ridge's scale (one sequence per three tokens for the per-sequence term).
const VERIFY_PRIOR_PULL: f64 = 0.01;
/// Samples before outlier clipping starts.
const CLIP_AFTER: u32 = 4;
const RIDGE_GRID: [f64; 9] = [32.0, 64.0, 128.0, 192.0, 256.0, 384.0, 512.0, 768.0, 1024.0];
/// Features are scaled so the normal equations stay well conditioned.
const TOKEN_SCALE: f64 = 1e-3;

/// Weighted least-squares accumulator for `N` features, with exponential forgetting.
#[derive(Debug, Clone, Copy)]
struct Normal<const N: usize> {
    xtx: [[f64; N]; N],
    xty: [f64; N],
    yy: f64,
}

impl<const N: usize> Normal<N> {
    const ZERO: Self = Self {
        xtx: [[0.0; N]; N],
        xty: [0.0; N],
        yy: 0.0,
    };

    fn add(&mut self, x: &[f64; N], y: f64, w: f64) {
        for i in 0..N {
            for j in 0..N {
                self.xtx[i][j] += w * x[i] * x[j];
            }
            self.xty[i] += w * x[i] * y;
        }
        self.yy += w * y * y;
    }

    fn scale(&mut self, f: f64) {
        self.xtx.iter_mut().flatten().for_each(|v| *v *= f);
        self.xty.iter_mut().for_each(|v| *v *= f);
        self.yy *= f;
    }

    fn plus(&self, o: &Self) -> Self {
        let mut r = *self;
        for i in 0..N {
            for j in 0..N {
                r.xtx[i][j] += o.xtx[i][j];
            }
            r.xty[i] += o.xty[i];
        }
        r.yy += o.yy;
        r
    }

    /// Solves (XᵀX + εI)θ = Xᵀy + εθ₀ by Gaussian elimination with partial pivoting; the
    /// small ε pulls an unidentified coefficient to its prior instead of to infinity.
    /// Returns θ and the residual sum of squares.
    fn solve(&self, prior: &[f64; N]) -> ([f64; N], f64) {
        self.solve_toward(prior, &[0.0; N])
    }

    /// [`Self::solve`] with an extra pull `pull[i]` of coefficient i toward `prior[i]`
    /// (XᵀX + diag(ε + pull)); the residual is the data's alone.
    #[allow(clippy::needless_range_loop)] // index form mirrors the textbook elimination
    fn solve_toward(&self, prior: &[f64; N], pull: &[f64; N]) -> ([f64; N], f64) {
        const EPS: f64 = 1e-9;
        let mut a = self.xtx;
        let mut b = self.xty;
        for i in 0..N {
            a[i][i] += EPS + pull[i];
            b[i] += (EPS + pull[i]) * prior[i];
        }
        for col in 0..N {
            let piv = (col..N)
                .max_by(|&p, &q| a[p][col].abs().total_cmp(&a[q][col].abs()))
                .unwrap_or(col);
            a.swap(col, piv);
            b.swap(col, piv);
            let d = a[col][col];
            if d.abs() < 1e-300 {
                return (*prior, f64::INFINITY);
            }
            for r in col + 1..N {
                let f = a[r][col] / d;
                for c in col..N {
                    a[r][c] -= f * a[col][c];
                }
                b[r] -= f * b[col];
            }
        }
        let mut th = [0.0; N];
        for i in (0..N).rev() {
            let s: f64 = (i + 1..N).map(|j| a[i][j] * th[j]).sum();
            th[i] = (b[i] - s) / a[i][i];
        }
        let mut sse = self.yy;
        for i in 0..N {
            sse -= 2.0 * th[i] * self.xty[i];
            for j in 0..N {
                sse += th[i] * self.xtx[i][j] * th[j];
            }
        }
        (th, sse.max(0.0))
    }
}

fn verify_x(tokens: f64, seqs: f64, ridge: f64) -> [f64; 4] {
    [
        1.0,
        tokens * TOKEN_SCALE,
        (tokens - ridge).max(0.0) * TOKEN_SCALE,
        seqs * TOKEN_SCALE,
    ]
}

fn draft_x(batch: f64) -> [f64; 2] {
    [1.0, batch * TOKEN_SCALE]
}

/// The fitted verify curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VerifyFit {
    pub base_s: f64,
    pub per_token_s: f64,
    pub per_token_above_ridge_s: f64,
    pub ridge_tokens: f64,
    pub per_seq_s: f64,
}

/// Online draft and verify step-cost model.
#[derive(Debug, Clone)]
pub struct CostModel {
    prior: CostPrior,
    draft_data: Normal<2>,
    draft_prior: Normal<2>,
    ridges: Vec<f64>,
    verify_data: Vec<Normal<4>>,
    verify_pull: [f64; 4],
    draft_fit: [f64; 2],
    verify_fit: VerifyFit,
    draft_samples: u32,
    verify_samples: u32,
    rejected: u64,
}

impl CostModel {
    /// A model that predicts `prior` until samples arrive.
    ///
    /// # Errors
    /// [`CostPriorError`] for a non-finite or negative field, or a ridge under 1 token.
    pub fn new(prior: CostPrior) -> Result<Self, CostPriorError> {
        let fields = [
            ("draft_base_s", prior.draft_base_s),
            ("draft_per_seq_s", prior.draft_per_seq_s),
            ("verify_base_s", prior.verify_base_s),
            ("verify_per_token_s", prior.verify_per_token_s),
            ("verify_per_token_above_ridge_s", prior.verify_per_token_above_ridge_s),
            ("verify_per_seq_s", prior.verify_per_seq_s),
        ];
        for (field, value) in fields {
            if !value.is_finite() || value < 0.0 {
                return Err(CostPriorError {
                    field,
                    rule: ">= 0",
                    value,
                });
            }
        }
        if !(prior.ridge_tokens.is_finite() && prior.ridge_tokens >= 1.0) {
            return Err(CostPriorError {
                field: "ridge_tokens",
                rule: ">= 1",
                value: prior.ridge_tokens,
            });
        }
        if prior.verify_base_s + prior.draft_base_s <= 0.0 {
            return Err(CostPriorError {
                field: "verify_base_s",
                rule: "> 0 (with draft_base_s)",
                value: 0.0,
            });
        }
        // The prior's ridge first: with no data above or near any ridge, every candidate
        // fits equally and the first one stays.
        let mut ridges = vec![prior.ridge_tokens];
        ridges.extend(RIDGE_GRID.iter().filter(|&&r| r != prior.ridge_tokens));
        let scale = prior.ridge_tokens * TOKEN_SCALE;
        let verify_pull = [1.0, scale * scale, scale * scale, scale * scale / 9.0].map(|x| VERIFY_PRIOR_PULL * x);
        let mut draft_prior = Normal::ZERO;
        for b in [1.0, 16.0, 64.0, 256.0] {
            draft_prior.add(
                &draft_x(b),
                prior.draft_base_s + prior.draft_per_seq_s * b,
                PRIOR_WEIGHT,
            );
        }
        let verify_data = vec![Normal::ZERO; ridges.len()];
        let mut m = Self {
            prior,
            draft_data: Normal::ZERO,
            draft_prior,
            ridges,
            verify_data,
            verify_pull,
            draft_fit: [prior.draft_base_s, prior.draft_per_seq_s / TOKEN_SCALE],
            verify_fit: VerifyFit {
                base_s: prior.verify_base_s,
                per_token_s: prior.verify_per_token_s,
                per_token_above_ridge_s: prior.verify_per_token_above_ridge_s,
                ridge_tokens: prior.ridge_tokens,
                per_seq_s: prior.verify_per_seq_s,
            },
            draft_samples: 0,
            verify_samples: 0,
            rejected: 0,
        };
        m.refit_draft();
        m.refit_verify();
        Ok(m)
    }

    /// Records one draft step of `batch` sequences that took `seconds`. Returns whether the
    /// sample was used (non-finite, non-positive or zero-batch samples are ignored).
    pub fn observe_draft(&mut self, batch: usize, seconds: f64) -> bool {
        if batch == 0 || !seconds.is_finite() || seconds <= 0.0 {
            self.rejected += 1;
            return false;
        }
        let b = batch as f64;
        let y = self.clip(seconds, self.draft_step_s(batch), self.draft_samples);
        self.draft_data.scale(FORGET);
        self.draft_data.add(&draft_x(b), y, 1.0);
        self.draft_samples = self.draft_samples.saturating_add(1);
        self.refit_draft();
        true
    }

    /// Records one verify forward over `tokens` tokens of `seqs` sequences that took
    /// `seconds`. Returns whether the sample was used (not with no tokens, no sequence, more
    /// sequences than tokens, or a non-finite or non-positive time).
    pub fn observe_verify(&mut self, tokens: usize, seqs: usize, seconds: f64) -> bool {
        if tokens == 0 || seqs == 0 || seqs > tokens || !seconds.is_finite() || seconds <= 0.0 {
            self.rejected += 1;
            return false;
        }
        let (t, s) = (tokens as f64, seqs as f64);
        let y = self.clip(seconds, self.verify_s(t, s), self.verify_samples);
        for (n, &r) in self.verify_data.iter_mut().zip(&self.ridges) {
            n.scale(FORGET);
            n.add(&verify_x(t, s, r), y, 1.0);
        }
        self.verify_samples = self.verify_samples.saturating_add(1);
        self.refit_verify();
        true
    }

    fn clip(&self, y: f64, pred: f64, samples: u32) -> f64 {
        if samples >= CLIP_AFTER && pred > 0.0 {
            y.clamp(pred / 4.0, pred * 4.0)
        } else {
            y
        }
    }

    fn refit_draft(&mut self) {
        let p = [self.prior.draft_base_s, self.prior.draft_per_seq_s / TOKEN_SCALE];
        let (th, _) = self.draft_data.plus(&self.draft_prior).solve(&p);
        self.draft_fit = [th[0].max(0.0), th[1].max(0.0)];
    }

    fn refit_verify(&mut self) {
        let p = &self.prior;
        let mut best: Option<(f64, VerifyFit)> = None;
        for (i, &r) in self.ridges.iter().enumerate() {
            let th0 = [
                p.verify_base_s,
                p.verify_per_token_s / TOKEN_SCALE,
                p.verify_per_token_above_ridge_s / TOKEN_SCALE,
                p.verify_per_seq_s / TOKEN_SCALE,
            ];
            let (th, sse) = self.verify_data[i].solve_toward(&th0, &self.verify_pull);
            let fit = VerifyFit {
                base_s: th[0].max(0.0),
                per_token_s: (th[1] * TOKEN_SCALE).max(0.0),
                per_token_above_ridge_s: (th[2] * TOKEN_SCALE).max(0.0),
                ridge_tokens: r,
                per_seq_s: (th[3] * TOKEN_SCALE).max(0.0),
            };
            // A candidate must be strictly better to replace the one before: ties (no data
            // near either ridge, or no data at all) keep the earlier, the prior's ridge first.
            if best.is_none_or(|(b, _)| sse < b * (1.0 - 1e-9)) {
                best = Some((sse, fit));
            }
        }
        if let Some((_, f)) = best {
            self.verify_fit = f;
        }
    }

    /// Predicted time of one draft step over `batch` sequences; 0 for an empty batch.
    pub fn draft_step_s(&self, batch: usize) -> f64 {
        if batch == 0 {
            return 0.0;
        }
        (self.draft_fit[0] + self.draft_fit[1] * batch as f64 * TOKEN_SCALE) * self.unseen_draft_scale()
    }

    /// Marginal draft-step time per extra sequence.
    pub fn draft_per_seq_s(&self) -> f64 {
        self.draft_fit[1] * TOKEN_SCALE * self.unseen_draft_scale()
    }

    /// Until a draft step is measured, the prior's draft costs scaled as the measured verify
    /// forwards are to the prior's: the prior's ratio of the two, on whatever device this is.
    /// Unscaled, a device far from the prior's (a small model on a CPU, whose forwards take a
    /// fraction of the prior's 1 ms draft step) makes drafting look dear from the first verify
    /// on, and a controller that never drafts never measures a draft step.
    fn unseen_draft_scale(&self) -> f64 {
        if self.draft_samples > 0 || self.verify_samples == 0 || self.prior.verify_base_s <= 0.0 {
            return 1.0;
        }
        self.verify_fit.base_s / self.prior.verify_base_s
    }

    /// Predicted time of one verify forward over `tokens` tokens of `seqs` sequences.
    pub fn verify_s(&self, tokens: f64, seqs: f64) -> f64 {
        let f = &self.verify_fit;
        f.base_s
            + f.per_token_s * tokens
            + f.per_token_above_ridge_s * (tokens - f.ridge_tokens).max(0.0)
            + f.per_seq_s * seqs
    }

    /// Marginal verify time per token at `tokens` (the slope of the curve there).
    pub fn verify_slope_s(&self, tokens: f64) -> f64 {
        let f = &self.verify_fit;
        f.per_token_s
            + if tokens >= f.ridge_tokens {
                f.per_token_above_ridge_s
            } else {
                0.0
            }
    }

    /// The current verify curve.
    pub fn verify_fit(&self) -> VerifyFit {
        self.verify_fit
    }

    /// Samples ignored as non-finite or non-positive.
    pub fn rejected_samples(&self) -> u64 {
        self.rejected
    }

    pub fn prior(&self) -> &CostPrior {
        &self.prior
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(1e-12)
    }

    #[test]
    fn predicts_the_prior_before_any_sample() {
        let p = CostPrior::default();
        let m = CostModel::new(p).unwrap();
        assert!(close(m.draft_step_s(8), p.draft_base_s + 8.0 * p.draft_per_seq_s, 1e-3));
        assert!(close(m.verify_s(100.0, 20.0), p.verify_base_s + 100.0 * p.verify_per_token_s + 20.0 * p.verify_per_seq_s, 1e-3));
        let above = 1260.0 - p.ridge_tokens;
        let want = p.verify_base_s + 1260.0 * p.verify_per_token_s + above * p.verify_per_token_above_ridge_s + 252.0 * p.verify_per_seq_s;
        assert!(close(m.verify_s(1260.0, 252.0), want, 1e-3));
        assert_eq!(m.draft_step_s(0), 0.0);
    }

    #[test]
    fn learns_a_different_device_with_its_ridge() {
        let mut m = CostModel::new(CostPrior::default()).unwrap();
        let truth = |t: f64| 2e-3 + 1e-6 * t + 8e-6 * (t - 512.0).max(0.0);
        for i in 0..200 {
            let t = [16, 64, 200, 400, 512, 700, 1000, 1500][i % 8];
            // Sequences of 1 and 5 tokens: the sequence count itself costs nothing here.
            let s = if i % 2 == 0 { t } else { t / 5 };
            assert!(m.observe_verify(t, s, truth(t as f64)));
        }
        let f = m.verify_fit();
        assert_eq!(f.ridge_tokens, 512.0, "{f:?}");
        for t in [10.0, 300.0, 800.0, 1400.0] {
            assert!(
                close(m.verify_s(t, t / 3.0), truth(t), 0.05),
                "t={t}: {} vs {}",
                m.verify_s(t, t / 3.0),
                truth(t)
            );
        }
    }

    /// As measured on an H200 at 128 running requests: most forwards at L = 0–1, a per-
    /// sequence cost (context reads) far above the per-token one below the ridge. Samples with
    /// a few requests at longer drafts are enough to keep the two apart, and the longer draft
    /// is priced at its per-token cost, not at the per-sequence one.
    #[test]
    fn per_sequence_cost_is_told_apart_from_per_token_cost() {
        let mut m = CostModel::new(CostPrior::default()).unwrap();
        let truth = |t: f64, s: f64| 5e-3 + 4e-6 * t + 60e-6 * s;
        for i in 0..300 {
            let s = [12usize, 30, 42, 57, 64][i % 5];
            // Mostly one or two tokens a sequence; now and then a few at five.
            let t = s + s / [1, 2, 3, 1, 2, 8][i % 6] * [0, 1, 1, 1, 2, 4][i % 6];
            assert!(m.observe_verify(t, s, truth(t as f64, s as f64)));
        }
        let f = m.verify_fit();
        assert!(close(f.per_seq_s, 60e-6, 0.1), "{f:?}");
        assert!(close(m.verify_s(210.0, 42.0), truth(210.0, 42.0), 0.05), "{f:?}");
        // 42 requests going from L = 1 to L = 4 cost 126 tokens at ≈ 4 µs, not at ≈ 44 µs.
        let extra = m.verify_s(210.0, 42.0) - m.verify_s(84.0, 42.0);
        assert!(extra < 1e-3, "{extra} s for 126 more tokens: {f:?}");
    }

    #[test]
    fn an_unmeasured_draft_step_keeps_the_priors_ratio_to_the_measured_verify() {
        let p = CostPrior::default();
        let mut m = CostModel::new(p).unwrap();
        // A device ten times faster than the prior's, seen through its verify forwards only.
        for i in 0..20 {
            let t = 8 + 4 * (i % 5);
            assert!(m.observe_verify(t, t / 2, 0.1 * p.verify_base_s));
        }
        let scale = m.verify_fit().base_s / p.verify_base_s;
        assert!((scale - 0.1).abs() < 0.01, "{scale}");
        let prior_step = p.draft_base_s + p.draft_per_seq_s * 8.0;
        assert!((m.draft_step_s(8) / prior_step - scale).abs() < 1e-9);
        assert!((m.draft_per_seq_s() / p.draft_per_seq_s - scale).abs() < 1e-9);
        // Once a draft step is measured, the fit takes over, unscaled.
        assert!(m.observe_draft(8, 0.5 * prior_step));
        let after = m.draft_step_s(8);
        assert!(after > 0.2 * prior_step && after < prior_step, "{after}");
    }

    #[test]
    fn draft_cost_follows_batch_samples() {
        let mut m = CostModel::new(CostPrior::default()).unwrap();
        for i in 0..100 {
            let b = [1, 8, 32, 128][i % 4];
            m.observe_draft(b, 0.5e-3 + 40e-6 * b as f64);
        }
        assert!(
            close(m.draft_step_s(64), 0.5e-3 + 40e-6 * 64.0, 0.05),
            "{}",
            m.draft_step_s(64)
        );
        assert!(close(m.draft_per_seq_s(), 40e-6, 0.1));
    }

    #[test]
    fn garbage_samples_are_ignored_and_stalls_are_clipped() {
        let mut m = CostModel::new(CostPrior::default()).unwrap();
        for _ in 0..20 {
            m.observe_verify(100, 50, 6e-3);
        }
        let before = m.verify_s(100.0, 50.0);
        for bad in [f64::NAN, f64::INFINITY, -1.0, 0.0] {
            assert!(!m.observe_verify(100, 50, bad));
            assert!(!m.observe_draft(4, bad));
        }
        assert!(!m.observe_verify(0, 0, 1e-3));
        assert!(!m.observe_verify(10, 0, 1e-3), "no sequence");
        assert!(!m.observe_verify(10, 11, 1e-3), "more sequences than tokens");
        assert_eq!(m.rejected_samples(), 11);
        assert_eq!(m.verify_s(100.0, 50.0), before);
        m.observe_verify(100, 50, 10.0); // a 10 s stall
        assert!(m.verify_s(100.0, 50.0) < 4.0 * before, "{}", m.verify_s(100.0, 50.0));
        assert!(m.verify_s(100.0, 50.0).is_finite());
    }

    #[test]
    fn invalid_priors_are_errors() {
        let bad = CostPrior {
            verify_base_s: f64::NAN,
            ..CostPrior::default()
        };
        assert_eq!(CostModel::new(bad).unwrap_err().field, "verify_base_s");
        let bad = CostPrior {
            ridge_tokens: 0.0,
            ..CostPrior::default()
        };
        assert_eq!(CostModel::new(bad).unwrap_err().field, "ridge_tokens");
        let bad = CostPrior {
            draft_per_seq_s: -1.0,
            ..CostPrior::default()
        };
        assert!(CostModel::new(bad).is_err());
    }
}
