//! Sampling parameters and their validation.

/// A rejected [`SamplingParams`] field; the message names the field and the value.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum SamplingError {
    #[error("temperature must be finite and >= 0 (0 = greedy), got {0}")]
    InvalidTemperature(f32),
    #[error("top_p must be finite and in (0, 1] (1 = off), got {0}")]
    InvalidTopP(f32),
}

/// How to turn logits into a token. `temperature == 0` means greedy (argmax).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 = off.
    pub top_k: usize,
    /// Keep the smallest most-likely set with cumulative probability >= `top_p`; 1 = off.
    pub top_p: f32,
    /// Seed of the request's RNG stream (see [`crate::Sampler::from_params`]).
    pub seed: u64,
}

impl Default for SamplingParams {
    /// Plain sampling from the model's distribution: T = 1, no top-k, no top-p.
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding (temperature 0).
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Rejects NaN/infinite/negative temperature and top_p outside (0, 1]. Every
    /// `top_k` is valid (0 = off; values above the vocabulary size keep everything).
    pub fn validate(&self) -> Result<(), SamplingError> {
        let t = self.temperature;
        if !t.is_finite() || t < 0.0 {
            return Err(SamplingError::InvalidTemperature(t));
        }
        let p = self.top_p;
        // `!(p > 0.0)` also catches NaN.
        if !(p > 0.0 && p <= 1.0) {
            return Err(SamplingError::InvalidTopP(p));
        }
        Ok(())
    }
}
