//! The labelled synthetic acceptance process (`--acceptance synthetic:MEAN[,SPREAD]`).
//!
//! Performance runs at 8B/1B shapes use random weights (DESIGN.md, "Models and data"): all
//! the compute runs, but the draft and target never agree. Only the accept/reject outcomes are
//! replaced: each request draws its own acceptance rate α_r ~ Beta with the given mean and
//! standard deviation (SPREAD, default 0: every request gets MEAN), and each drafted position
//! is accepted with probability α_r until the first rejection, the i.i.d. model of
//! ALGORITHMS.md. Every output that such a run touches carries [`SyntheticAcceptance::label`].
//!
//! Each request's outcomes come from its own ChaCha8 stream (seed, request index), so they
//! do not depend on how the runtime interleaves requests.

use std::fmt;
use std::str::FromStr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution};
use serde::Serialize;

/// The parsed `synthetic:MEAN[,SPREAD]` setting.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SyntheticAcceptance {
    /// Mean per-request acceptance rate, in [0, 1].
    pub mean: f64,
    /// Standard deviation of the per-request rate across requests; 0 = all equal.
    pub spread: f64,
}

/// A bad `--acceptance` value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SyntheticError {
    #[error("--acceptance `{0}`: expected synthetic:MEAN[,SPREAD], e.g. synthetic:0.7,0.1")]
    Syntax(String),
    #[error("--acceptance MEAN must be in [0, 1], got {0}")]
    BadMean(f64),
    #[error("--acceptance SPREAD must be >= 0 and below sqrt(MEAN·(1−MEAN)) = {max}, got {spread}")]
    BadSpread { spread: f64, max: f64 },
}

impl FromStr for SyntheticAcceptance {
    type Err = SyntheticError;

    fn from_str(s: &str) -> Result<Self, SyntheticError> {
        let syntax = || SyntheticError::Syntax(s.to_owned());
        let rest = s.trim().strip_prefix("synthetic:").ok_or_else(syntax)?;
        let mut parts = rest.split(',');
        let num = |p: Option<&str>| -> Result<Option<f64>, SyntheticError> {
            p.map(|x| x.trim().parse::<f64>().map_err(|_| syntax())).transpose()
        };
        let mean = num(parts.next())?.ok_or_else(syntax)?;
        let spread = num(parts.next())?.unwrap_or(0.0);
        if parts.next().is_some() {
            return Err(syntax());
        }
        Self::new(mean, spread)
    }
}

impl SyntheticAcceptance {
    /// # Errors
    /// [`SyntheticError`] when the mean is outside [0, 1] or the spread is negative, NaN, or too
    /// wide for a Beta with that mean (σ² must stay below μ(1 − μ)).
    pub fn new(mean: f64, spread: f64) -> Result<Self, SyntheticError> {
        if !(0.0..=1.0).contains(&mean) {
            return Err(SyntheticError::BadMean(mean));
        }
        let max = (mean * (1.0 - mean)).sqrt();
        if !(spread >= 0.0 && (spread == 0.0 || spread < max)) {
            return Err(SyntheticError::BadSpread { spread, max });
        }
        Ok(Self { mean, spread })
    }

    /// The label that every output of a synthetic run carries.
    pub fn label(&self) -> String {
        format!("synthetic acceptance (mean {}, spread {})", self.mean, self.spread)
    }

    /// The outcome process of request number `index` in a run seeded with `seed`.
    pub fn for_request(&self, seed: u64, index: u64) -> RequestAcceptance {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(index);
        let alpha = if self.spread == 0.0 {
            self.mean
        } else {
            // Beta(a, b) with mean μ and variance σ²: a + b = μ(1 − μ)/σ² − 1.
            let k = self.mean * (1.0 - self.mean) / (self.spread * self.spread) - 1.0;
            match Beta::new(self.mean * k, (1.0 - self.mean) * k) {
                Ok(b) => b.sample(&mut rng),
                Err(_) => self.mean,
            }
        };
        RequestAcceptance { alpha, rng }
    }
}

impl fmt::Display for SyntheticAcceptance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// One request's accept/reject outcomes.
#[derive(Debug, Clone)]
pub struct RequestAcceptance {
    alpha: f64,
    rng: ChaCha8Rng,
}

impl RequestAcceptance {
    /// This request's acceptance rate α_r.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// How many of `drafted` positions the "verifier" accepts: Bernoulli(α_r) per position,
    /// stopping at the first rejection.
    pub fn verify(&mut self, drafted: usize) -> usize {
        (0..drafted)
            .take_while(|_| self.rng.random::<f64>() < self.alpha)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let s: SyntheticAcceptance = "synthetic:0.7".parse().unwrap();
        assert_eq!(s, SyntheticAcceptance { mean: 0.7, spread: 0.0 });
        let s: SyntheticAcceptance = "synthetic:0.6, 0.1".parse().unwrap();
        assert_eq!(s.spread, 0.1);
        assert!(s.label().contains("synthetic"));
        for bad in ["0.7", "synthetic:", "synthetic:x", "synthetic:0.5,0.1,2", "real:0.5"] {
            assert!(
                matches!(bad.parse::<SyntheticAcceptance>(), Err(SyntheticError::Syntax(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            "synthetic:1.5".parse::<SyntheticAcceptance>(),
            Err(SyntheticError::BadMean(_))
        ));
        assert!(matches!(
            "synthetic:NaN".parse::<SyntheticAcceptance>(),
            Err(SyntheticError::BadMean(_))
        ));
        assert!(matches!(
            "synthetic:0.5,0.5".parse::<SyntheticAcceptance>(),
            Err(SyntheticError::BadSpread { .. })
        ));
        assert!(matches!(
            "synthetic:0.5,-0.1".parse::<SyntheticAcceptance>(),
            Err(SyntheticError::BadSpread { .. })
        ));
        assert!(matches!(
            "synthetic:1,0.1".parse::<SyntheticAcceptance>(),
            Err(SyntheticError::BadSpread { .. })
        ));
        assert!("synthetic:1".parse::<SyntheticAcceptance>().is_ok());
    }

    #[test]
    fn per_request_rates_follow_the_beta() {
        let s = SyntheticAcceptance::new(0.7, 0.1).unwrap();
        let a: Vec<f64> = (0..20_000).map(|i| s.for_request(3, i).alpha()).collect();
        let m = a.iter().sum::<f64>() / a.len() as f64;
        let sd = (a.iter().map(|x| (x - m).powi(2)).sum::<f64>() / a.len() as f64).sqrt();
        assert!((m - 0.7).abs() < 0.005 && (sd - 0.1).abs() < 0.005, "mean {m} sd {sd}");
        assert!(a.iter().all(|x| (0.0..=1.0).contains(x)));
    }

    #[test]
    fn outcomes_are_geometric_and_seeded() {
        let s = SyntheticAcceptance::new(0.6, 0.0).unwrap();
        let mut r = s.for_request(1, 0);
        let n = 50_000;
        let tries: Vec<usize> = (0..n).map(|_| r.verify(4)).collect();
        // E[accepted] = α + α² + α³ + α⁴ for L = 4.
        let want = 0.6 + 0.36 + 0.216 + 0.1296;
        let got = tries.iter().sum::<usize>() as f64 / n as f64;
        assert!((got - want).abs() < 0.02, "{got} vs {want}");
        let again: Vec<usize> = {
            let mut r = s.for_request(1, 0);
            (0..100).map(|_| r.verify(4)).collect()
        };
        assert_eq!(&tries[..100], &again[..]);
        let mut other = s.for_request(1, 1);
        assert_ne!((0..100).map(|_| other.verify(4)).collect::<Vec<_>>(), again);
        let mut always = SyntheticAcceptance::new(1.0, 0.0).unwrap().for_request(0, 0);
        assert_eq!(always.verify(7), 7);
        let mut never = SyntheticAcceptance::new(0.0, 0.0).unwrap().for_request(0, 0);
        assert_eq!(never.verify(7), 0);
    }
}
