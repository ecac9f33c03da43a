//! Behaviour of argmax, processed_probs, validation and seeding.

use vpd_sampling::{argmax, processed_probs, Sampler, SamplingError, SamplingParams};

fn params(temperature: f32, top_k: usize, top_p: f32) -> SamplingParams {
    SamplingParams {
        temperature,
        top_k,
        top_p,
        seed: 7,
    }
}

/// Logits whose softmax at T=1 is exactly `probs` (up to rounding).
fn logits_of(probs: &[f64]) -> Vec<f32> {
    probs.iter().map(|p| p.ln() as f32).collect()
}

fn support(probs: &[f32]) -> Vec<usize> {
    (0..probs.len()).filter(|&i| probs[i] > 0.0).collect()
}

/// Small deterministic pseudo-random logits (no RNG crate needed in tests).
fn lcg_logits(n: usize, mut s: u64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 8.0 - 4.0
        })
        .collect()
}

#[test]
fn argmax_takes_first_max_and_treats_nan_as_neg_inf() {
    assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
    assert_eq!(argmax(&[f32::NAN, -5.0, f32::NAN]), 1);
    assert_eq!(argmax(&[f32::NAN, f32::NAN]), 0);
    assert_eq!(argmax(&[]), 0);
    assert_eq!(argmax(&[f32::NEG_INFINITY, f32::INFINITY]), 1);
}

#[test]
fn greedy_sample_equals_argmax() {
    let mut s = Sampler::new(1);
    for seed in 0..50 {
        let l = lcg_logits(100, seed);
        assert_eq!(s.sample(&l, &SamplingParams::greedy()), argmax(&l));
    }
    let p = processed_probs(&[0.0, 2.0, 1.0], &SamplingParams::greedy());
    assert_eq!(p, vec![0.0, 1.0, 0.0]);
}

#[test]
fn one_hot_logits_always_sample_that_id() {
    let mut l = vec![f32::NEG_INFINITY; 32];
    l[17] = 0.0;
    let mut s = Sampler::new(3);
    for t in [0.1, 1.0, 5.0] {
        for _ in 0..1000 {
            assert_eq!(s.sample(&l, &params(t, 0, 0.9)), 17);
        }
    }
}

#[test]
fn top_k_one_equals_greedy() {
    let mut s = Sampler::new(5);
    for seed in 0..50 {
        let l = lcg_logits(64, seed);
        assert_eq!(s.sample(&l, &params(1.5, 1, 1.0)), argmax(&l));
    }
}

#[test]
fn top_k_keeps_k_largest_with_ties_broken_by_lower_id() {
    let l = [1.0, 5.0, 3.0, 5.0, 3.0, 0.0];
    let p = processed_probs(&l, &params(1.0, 3, 1.0));
    assert_eq!(support(&p), vec![1, 2, 3]); // 2 beats 4 on the tie at 3.0
    let sum: f32 = p.iter().sum();
    assert!((sum - 1.0).abs() < 1e-6);
    assert!((p[1] - p[3]).abs() < 1e-7);
    // top_k beyond the vocabulary keeps everything.
    assert_eq!(
        support(&processed_probs(&l, &params(1.0, 100, 1.0))).len(),
        6
    );
}

#[test]
fn top_p_keeps_exactly_the_expected_set() {
    let l = logits_of(&[0.05, 0.5, 0.15, 0.3]);
    let cases: [(f32, &[usize]); 5] = [
        (0.4, &[1]),
        (0.75, &[1, 3]),
        (0.9, &[1, 2, 3]),
        (0.99, &[0, 1, 2, 3]),
        (1.0, &[0, 1, 2, 3]),
    ];
    for (top_p, want) in cases {
        let p = processed_probs(&l, &params(1.0, 0, top_p));
        assert_eq!(support(&p), want, "top_p = {top_p}");
    }
    // Renormalised over {1, 3}: 0.5/0.8 and 0.3/0.8.
    let p = processed_probs(&l, &params(1.0, 0, 0.75));
    assert!((p[1] - 0.625).abs() < 1e-6 && (p[3] - 0.375).abs() < 1e-6);
}

#[test]
fn top_p_applies_after_top_k_on_renormalised_probs() {
    let l = logits_of(&[0.4, 0.3, 0.2, 0.1]);
    // Alone, top_p = 0.55 needs {0, 1} (0.4 < 0.55 <= 0.7).
    assert_eq!(
        support(&processed_probs(&l, &params(1.0, 0, 0.55))),
        vec![0, 1]
    );
    // After top_k = 2 the mass is {4/7, 3/7}: 0.571 >= 0.55, so only token 0 stays.
    assert_eq!(
        support(&processed_probs(&l, &params(1.0, 2, 0.55))),
        vec![0]
    );
}

#[test]
fn temperature_scales_logits_before_softmax() {
    let l = [1.0f32, 2.0, 0.5, -1.0];
    for t in [0.25f32, 1.0, 3.0] {
        let p = processed_probs(&l, &params(t, 0, 1.0));
        let e: Vec<f64> = l
            .iter()
            .map(|&x| (f64::from(x) / f64::from(t)).exp())
            .collect();
        let z: f64 = e.iter().sum();
        for (pi, ei) in p.iter().zip(&e) {
            assert!((f64::from(*pi) - ei / z).abs() < 1e-6);
        }
    }
}

#[test]
fn processed_probs_ignore_nan_and_handle_infinite_logits() {
    let p = processed_probs(&[f32::NAN, 0.0, 0.0], &params(1.0, 0, 1.0));
    assert_eq!(p, vec![0.0, 0.5, 0.5]);
    let p = processed_probs(&[f32::INFINITY, 0.0, f32::INFINITY], &params(1.0, 0, 1.0));
    assert_eq!(p, vec![0.5, 0.0, 0.5]);
    let p = processed_probs(&[f32::NEG_INFINITY; 3], &params(1.0, 0, 0.5));
    assert_eq!(p, vec![1.0, 0.0, 0.0]);
    assert!(processed_probs(&[], &params(1.0, 5, 0.5)).is_empty());
}

#[test]
fn large_vocab_distribution_is_normalised() {
    for v in [49152usize, 128256] {
        let l = lcg_logits(v, v as u64);
        for (k, top_p) in [(0, 1.0), (0, 0.9), (50, 0.95)] {
            let p = processed_probs(&l, &params(0.8, k, top_p));
            let sum: f64 = p.iter().map(|&x| f64::from(x)).sum();
            assert!((sum - 1.0).abs() < 1e-4, "v={v} k={k} p={top_p}: {sum}");
            assert!(p.iter().all(|x| x.is_finite() && *x >= 0.0));
            if k > 0 {
                assert!(support(&p).len() <= k);
            }
        }
    }
}

#[test]
fn validate_rejects_bad_params_and_names_them() {
    assert_eq!(SamplingParams::default().validate(), Ok(()));
    assert_eq!(SamplingParams::greedy().validate(), Ok(()));
    for t in [f32::NAN, f32::INFINITY, -0.5] {
        let e = params(t, 0, 1.0).validate().unwrap_err();
        assert!(matches!(e, SamplingError::InvalidTemperature(_)));
        assert!(e.to_string().contains("temperature"));
    }
    for top_p in [f32::NAN, 0.0, -0.1, 1.5, f32::INFINITY] {
        let e = params(1.0, 0, top_p).validate().unwrap_err();
        assert!(matches!(e, SamplingError::InvalidTopP(_)));
        assert!(e.to_string().contains("top_p"));
    }
}

#[test]
fn same_seed_gives_same_sequence() {
    let l = lcg_logits(1000, 42);
    let p = params(1.0, 0, 1.0);
    let draw = |seed| {
        let mut s = Sampler::new(seed);
        (0..200).map(|_| s.sample(&l, &p)).collect::<Vec<_>>()
    };
    assert_eq!(draw(9), draw(9));
    assert_ne!(draw(9), draw(10));
    let mut a = Sampler::from_params(&p);
    let mut b = Sampler::new(p.seed);
    for _ in 0..100 {
        let u = a.uniform();
        assert!((0.0..1.0).contains(&u));
        assert_eq!(u, b.uniform());
    }
}

#[test]
fn sample_probs_never_returns_zero_mass_tokens() {
    let probs = [0.0, 0.3, 0.0, 0.0, 0.7, 0.0, -1.0, f32::NAN];
    let mut s = Sampler::new(11);
    for _ in 0..20_000 {
        let i = s.sample_probs(&probs);
        assert!(i == 1 || i == 4, "sampled {i}");
    }
    assert_eq!(s.sample_probs(&[]), 0);
    assert_eq!(s.sample_probs(&[0.0, 0.0]), 0);
}
