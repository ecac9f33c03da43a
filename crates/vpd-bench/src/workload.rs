//! Workload generation as vLLM's `benchmarks/benchmark_serving.py` does it for ShareGPT.
//!
//! - Sampling (`sample_sharegpt_requests`): shuffle the conversations with a seeded RNG, take
//!   the first human turn as the prompt and the reply's token length as the output length,
//!   skip pairs whose prompt or output is under 4 tokens, whose prompt is over 1024 tokens or
//!   whose total is over 2048, and stop at N kept. Tokenizing lazily, in shuffled order, keeps
//!   it cheap and makes the sample depend only on (dataset, seed, N, tokenizer).
//! - Arrivals (`get_request`): inter-arrival gaps drawn from a gamma distribution with shape
//!   = burstiness and scale = 1 / (rate · burstiness), so the mean gap is 1 / rate; burstiness
//!   1 is a Poisson process, below 1 burstier, above 1 more regular. An infinite rate sends
//!   everything at t = 0.
//!
//! The tokenizer is a closure, so this crate needs no model.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma};
use serde::Serialize;

use crate::sharegpt::Dataset;

/// vLLM's ShareGPT filter bounds, in tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FilterLimits {
    /// Drop a pair whose prompt or output is shorter than this.
    pub min_tokens: usize,
    /// Drop a pair whose prompt is longer than this.
    pub max_prompt: usize,
    /// Drop a pair whose prompt + output is longer than this.
    pub max_total: usize,
}

impl Default for FilterLimits {
    fn default() -> Self {
        Self {
            min_tokens: 4,
            max_prompt: 1024,
            max_total: 2048,
        }
    }
}

/// One benchmark request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SampledRequest {
    /// Index of its conversation in the dataset.
    pub conversation: usize,
    pub prompt: String,
    pub prompt_len: usize,
    /// Tokens to generate: the length of the dataset's reply (run with ignore_eos).
    pub output_len: usize,
}

/// What the filter saw, for the report ("N conversations read, M usable").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct FilterStats {
    /// Conversations visited before N were kept (all of them if fewer were usable).
    pub visited: usize,
    /// Visited conversations without a human turn followed by a reply.
    pub no_exchange: usize,
    /// Prompt or output under `min_tokens`.
    pub too_short: usize,
    /// Prompt over `max_prompt` or total over `max_total`.
    pub too_long: usize,
    pub kept: usize,
}

/// Invalid workload settings or data.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WorkloadError {
    #[error("the dataset has no conversations")]
    EmptyDataset,
    #[error("no usable request in the dataset after filtering ({stats:?})")]
    NoUsableRequests { stats: FilterStats },
    #[error("the number of requests must be at least 1")]
    ZeroRequests,
    #[error("request rate must be > 0 (or inf), got {0}")]
    BadRate(f64),
    #[error("burstiness must be finite and > 0, got {0}")]
    BadBurstiness(f64),
}

/// Samples up to `n` requests as vLLM does. Returns fewer than `n` only when the dataset has
/// fewer usable pairs; `stats.kept` says how many.
///
/// # Errors
/// [`WorkloadError::ZeroRequests`], [`WorkloadError::EmptyDataset`], or
/// [`WorkloadError::NoUsableRequests`] when every conversation is filtered out.
pub fn sample_requests<F: Fn(&str) -> usize>(
    dataset: &Dataset,
    n: usize,
    seed: u64,
    limits: FilterLimits,
    tokens: F,
) -> Result<(Vec<SampledRequest>, FilterStats), WorkloadError> {
    if n == 0 {
        return Err(WorkloadError::ZeroRequests);
    }
    if dataset.conversations.is_empty() {
        return Err(WorkloadError::EmptyDataset);
    }
    let mut order: Vec<usize> = (0..dataset.conversations.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let mut stats = FilterStats::default();
    let mut out = Vec::with_capacity(n.min(order.len()));
    for i in order {
        if out.len() == n {
            break;
        }
        stats.visited += 1;
        let Some((prompt, reply)) = dataset.conversations[i].first_exchange() else {
            stats.no_exchange += 1;
            continue;
        };
        let (p, o) = (tokens(prompt), tokens(reply));
        if p < limits.min_tokens || o < limits.min_tokens {
            stats.too_short += 1;
        } else if p > limits.max_prompt || p + o > limits.max_total {
            stats.too_long += 1;
        } else {
            out.push(SampledRequest {
                conversation: i,
                prompt: prompt.to_owned(),
                prompt_len: p,
                output_len: o,
            });
        }
    }
    stats.kept = out.len();
    if out.is_empty() {
        return Err(WorkloadError::NoUsableRequests { stats });
    }
    Ok((out, stats))
}

/// Send times in seconds from the start, one per request, non-decreasing. Request 0 goes at
/// t = 0 and each later one a gamma-distributed gap after the one before (vLLM's generator
/// yields a request, then sleeps).
///
/// # Errors
/// [`WorkloadError::ZeroRequests`], [`WorkloadError::BadRate`] for rate ≤ 0 or NaN,
/// [`WorkloadError::BadBurstiness`] for burstiness ≤ 0 or non-finite.
pub fn arrival_times(n: usize, rate: f64, burstiness: f64, seed: u64) -> Result<Vec<f64>, WorkloadError> {
    if n == 0 {
        return Err(WorkloadError::ZeroRequests);
    }
    if rate.is_nan() || rate <= 0.0 {
        return Err(WorkloadError::BadRate(rate));
    }
    if !burstiness.is_finite() || burstiness <= 0.0 {
        return Err(WorkloadError::BadBurstiness(burstiness));
    }
    if rate.is_infinite() {
        return Ok(vec![0.0; n]);
    }
    let gamma = Gamma::new(burstiness, 1.0 / (rate * burstiness)).map_err(|_| WorkloadError::BadRate(rate))?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut t = 0.0;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(t);
        t += gamma.sample(&mut rng);
    }
    Ok(out)
}

/// Validates a request-rate sweep: every rate > 0 (inf allowed), at least one.
///
/// # Errors
/// [`WorkloadError::BadRate`] naming the first bad rate; `BadRate(NaN)` for an empty sweep.
pub fn validate_rates(rates: &[f64]) -> Result<(), WorkloadError> {
    if rates.is_empty() {
        return Err(WorkloadError::BadRate(f64::NAN));
    }
    match rates.iter().find(|r| r.is_nan() || **r <= 0.0) {
        Some(&r) => Err(WorkloadError::BadRate(r)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sharegpt::{Conversation, Turn};

    fn conv(human: &str, gpt: &str) -> Conversation {
        Conversation {
            id: String::new(),
            conversations: vec![
                Turn {
                    from: "human".into(),
                    value: human.into(),
                },
                Turn {
                    from: "gpt".into(),
                    value: gpt.into(),
                },
            ],
        }
    }

    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    fn w(n: usize) -> String {
        vec!["x"; n].join(" ")
    }

    #[test]
    fn filter_applies_vllm_bounds() {
        let ds = Dataset {
            conversations: vec![
                conv(&w(4), &w(4)),       // kept: both at the minimum
                conv(&w(3), &w(10)),      // prompt too short
                conv(&w(10), &w(3)),      // output too short
                conv(&w(1025), &w(10)),   // prompt too long
                conv(&w(1024), &w(1024)), // total 2048: kept
                conv(&w(1024), &w(1025)), // total too long
                Conversation {
                    id: String::new(),
                    conversations: vec![Turn {
                        from: "gpt".into(),
                        value: w(9),
                    }],
                },
            ],
            truncated: false,
        };
        let (reqs, st) = sample_requests(&ds, 100, 0, FilterLimits::default(), words).unwrap();
        assert_eq!(
            st,
            FilterStats {
                visited: 7,
                no_exchange: 1,
                too_short: 2,
                too_long: 2,
                kept: 2
            }
        );
        let mut kept: Vec<_> = reqs
            .iter()
            .map(|r| (r.conversation, r.prompt_len, r.output_len))
            .collect();
        kept.sort();
        assert_eq!(kept, vec![(0, 4, 4), (4, 1024, 1024)]);
    }

    #[test]
    fn sampling_is_seeded_and_stops_at_n() {
        let ds = Dataset {
            conversations: (0..50).map(|i| conv(&w(5 + i), &w(6))).collect(),
            truncated: true,
        };
        let (a, sa) = sample_requests(&ds, 10, 7, FilterLimits::default(), words).unwrap();
        let (b, _) = sample_requests(&ds, 10, 7, FilterLimits::default(), words).unwrap();
        let (c, _) = sample_requests(&ds, 10, 8, FilterLimits::default(), words).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!((a.len(), sa.visited), (10, 10));
    }

    #[test]
    fn bad_inputs_are_errors() {
        let empty = Dataset {
            conversations: vec![],
            truncated: false,
        };
        assert_eq!(
            sample_requests(&empty, 5, 0, FilterLimits::default(), words),
            Err(WorkloadError::EmptyDataset)
        );
        let ds = Dataset {
            conversations: vec![conv("a", "b")],
            truncated: false,
        };
        assert_eq!(
            sample_requests(&ds, 0, 0, FilterLimits::default(), words),
            Err(WorkloadError::ZeroRequests)
        );
        assert!(matches!(
            sample_requests(&ds, 5, 0, FilterLimits::default(), words),
            Err(WorkloadError::NoUsableRequests { .. })
        ));
        for r in [0.0, -1.0, f64::NAN] {
            assert!(
                matches!(arrival_times(5, r, 1.0, 0), Err(WorkloadError::BadRate(_))),
                "{r}"
            );
        }
        for b in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                arrival_times(5, 1.0, b, 0),
                Err(WorkloadError::BadBurstiness(_))
            ));
        }
        assert_eq!(arrival_times(0, 1.0, 1.0, 0), Err(WorkloadError::ZeroRequests));
        assert!(validate_rates(&[1.0, 2.0, f64::INFINITY]).is_ok());
        assert!(matches!(validate_rates(&[1.0, 0.0]), Err(WorkloadError::BadRate(r)) if r == 0.0));
        assert!(validate_rates(&[]).is_err());
    }

    #[test]
    fn poisson_arrivals_have_the_requested_rate() {
        let t = arrival_times(20_000, 4.0, 1.0, 1).unwrap();
        assert_eq!(t[0], 0.0);
        assert!(t.windows(2).all(|w| w[1] >= w[0]));
        let gaps: Vec<f64> = t.windows(2).map(|w| w[1] - w[0]).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        assert!((mean - 0.25).abs() < 0.01, "mean gap {mean}");
        // Exponential: coefficient of variation 1. Gamma(shape k): 1/sqrt(k).
        assert!((var.sqrt() / mean - 1.0).abs() < 0.05);
        let bursty = arrival_times(20_000, 4.0, 0.25, 1).unwrap();
        let g: Vec<f64> = bursty.windows(2).map(|w| w[1] - w[0]).collect();
        let m = g.iter().sum::<f64>() / g.len() as f64;
        let cv = (g.iter().map(|x| (x - m).powi(2)).sum::<f64>() / g.len() as f64).sqrt() / m;
        assert!((m - 0.25).abs() < 0.02 && (cv - 2.0).abs() < 0.2, "mean {m} cv {cv}");
        assert_eq!(arrival_times(3, f64::INFINITY, 1.0, 0).unwrap(), vec![0.0; 3]);
    }
}
