//! Seeded draws: inverse-CDF sampling from a ChaCha20 stream.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::{argmax, processed_probs, SamplingParams};

/// Per-request sampler. ChaCha20 is used because its output for a given seed is
/// specified and portable, so runs (and CPU/GPU cross-checks) reproduce exactly.
#[derive(Debug, Clone)]
pub struct Sampler {
    rng: ChaCha20Rng,
}

impl Sampler {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha20Rng::seed_from_u64(seed),
        }
    }

    /// A sampler seeded with `p.seed`.
    pub fn from_params(p: &SamplingParams) -> Self {
        Self::new(p.seed)
    }

    /// One uniform draw in [0, 1) (24 random bits).
    pub fn uniform(&mut self) -> f32 {
        self.rng.random::<f32>()
    }

    /// Samples a token from `logits` under `p`. Greedy (`temperature == 0`) returns
    /// [`argmax`] and consumes no randomness; otherwise one draw from
    /// [`processed_probs`].
    pub fn sample(&mut self, logits: &[f32], p: &SamplingParams) -> u32 {
        if p.temperature == 0.0 {
            return argmax(logits);
        }
        let probs = processed_probs(logits, p);
        self.sample_probs(&probs)
    }

    /// Inverse-CDF draw from `probs` using exactly one uniform. `probs` need not be
    /// normalised (the draw is scaled by their sum); negative/NaN entries count as 0
    /// and zero-mass tokens are never returned. The uniform is drawn in f64 because
    /// with V ~ 1e5 many probabilities are below f32's 2^-24 resolution. With no
    /// positive mass at all it returns [`argmax`] of `probs` (0 if empty).
    pub fn sample_probs(&mut self, probs: &[f32]) -> u32 {
        // Draw first so every call consumes exactly one uniform, whatever the input.
        let u: f64 = self.rng.random();
        let w = |x: f32| if x > 0.0 { f64::from(x) } else { 0.0 };
        let total: f64 = probs.iter().map(|&x| w(x)).sum();
        if !(total > 0.0 && total.is_finite()) {
            return argmax(probs);
        }
        let target = u * total;
        let mut cum = 0.0;
        let mut last_positive = 0;
        for (i, &x) in probs.iter().enumerate() {
            if w(x) > 0.0 {
                cum += w(x);
                last_positive = i;
                if target < cum {
                    return i as u32;
                }
            }
        }
        // Rounding can leave `cum` a hair below `target`; the last positive token is
        // the one whose CDF interval the draw fell into.
        last_positive as u32
    }
}
