//! The CPU form of the CUDA sampling kernels (`vpd_sampling::kernel_ref`): its exp, its kept
//! sets and its draws agree with the f64 reference (`processed_probs`, `verify_chain`), and its
//! output distributions pass the Bernstein-bound frequency checks of `speculative_support`.
mod speculative_support;

use speculative_support::{check_counts, random_dist, random_logits};
use vpd_sampling::kernel_ref::{
    exp_det, fx, probs_ref, sample_ref, sampling_masses, verify_chain_ref, MAX_DRAFT,
};
use vpd_sampling::{argmax, processed_probs, verify_chain_greedy, Sampler, SamplingParams};

fn params(temperature: f32, top_k: usize, top_p: f32, seed: u64) -> SamplingParams {
    SamplingParams {
        temperature,
        top_k,
        top_p,
        seed,
    }
}

#[test]
fn exp_det_is_within_a_few_ulp_of_exp() {
    let mut d = 0.0f32;
    while d > -32.0 {
        let got = f64::from(exp_det(d));
        let want = f64::from(d).exp();
        assert!(
            ((got - want) / want).abs() < 4e-7,
            "exp({d}) = {got}, want {want}"
        );
        d -= 0.000_731;
    }
    assert_eq!(exp_det(0.0), 1.0);
    assert_eq!(exp_det(-40.0), 0.0);
    assert_eq!(exp_det(f32::NAN), 0.0);
    assert_eq!(exp_det(f32::NEG_INFINITY), 0.0);
}

#[test]
fn fixed_point_masses_clamp_and_zero_bad_values() {
    assert_eq!(fx(1.0), 1 << 44);
    assert_eq!(fx(2.0), 1 << 44);
    assert_eq!(fx(-0.5), 0);
    assert_eq!(fx(f32::NAN), 0);
    assert_eq!(fx(0.5), 1 << 43);
}

#[test]
fn kept_sets_equal_processed_probs_support() {
    for (v, k, top_p, seed) in [
        (1000usize, 0usize, 0.9f32, 1u64),
        (1000, 50, 1.0, 2),
        (1000, 50, 0.8, 3),
        (111, 7, 0.5, 4),
        (17, 0, 1.0, 5),
    ] {
        let logits = random_logits(v, seed);
        let p = params(0.8, k, top_p, seed);
        let m = sampling_masses(&logits, &p).unwrap();
        let want = processed_probs(&logits, &p);
        for i in 0..v {
            assert_eq!(
                m[i] > 0,
                want[i] > 0.0,
                "token {i} (V={v} k={k} top_p={top_p})"
            );
            let got = m[i] as f64 / m.iter().sum::<u64>() as f64;
            assert!(
                (got - f64::from(want[i])).abs() < 1e-6,
                "token {i}: {got} vs {}",
                want[i]
            );
        }
    }
}

#[test]
fn probs_rows_are_the_processed_distribution_and_one_hot_when_greedy() {
    for (v, t, k, top_p, seed) in [
        (1000usize, 0.8f32, 0usize, 0.9f32, 1u64),
        (1000, 1.0, 50, 1.0, 2),
        (111, 0.7, 7, 0.5, 4),
        (17, 1.3, 0, 1.0, 5),
    ] {
        let logits = random_logits(v, seed);
        let p = params(t, k, top_p, seed);
        let got = probs_ref(&logits, &p);
        let want = processed_probs(&logits, &p);
        let sum: f64 = got.iter().map(|&x| f64::from(x)).sum();
        assert!((sum - 1.0).abs() < 1e-5, "sum {sum} (V={v})");
        for i in 0..v {
            assert_eq!(got[i] > 0.0, want[i] > 0.0, "support at {i} (V={v})");
            assert!((got[i] - want[i]).abs() < 1e-6, "token {i}: {} vs {}", got[i], want[i]);
        }
    }
    // Greedy and rows with no finite logit: one-hot at the argmax (NaN ranks as -inf).
    let mut logits = random_logits(50, 9);
    logits[3] = f32::NAN;
    let a = argmax(&logits) as usize;
    let got = probs_ref(&logits, &params(0.0, 0, 1.0, 0));
    assert!(got.iter().enumerate().all(|(i, &x)| x == if i == a { 1.0 } else { 0.0 }));
    assert_eq!(probs_ref(&[f32::NEG_INFINITY; 4], &params(1.0, 0, 1.0, 0)), vec![1.0, 0.0, 0.0, 0.0]);
    assert!(probs_ref(&[], &params(1.0, 0, 1.0, 0)).is_empty());
}

#[test]
fn greedy_and_top_k_one_are_argmax() {
    for seed in 0..20u64 {
        let mut logits = random_logits(1000, seed);
        logits[(seed as usize * 37) % 1000] = f32::NAN;
        let a = argmax(&logits);
        assert_eq!(sample_ref(&logits, &params(0.0, 0, 1.0, seed), 0, 0), a);
        assert_eq!(sample_ref(&logits, &params(1.0, 1, 1.0, seed), 3, 9), a);
    }
    assert_eq!(
        sample_ref(&[f32::NEG_INFINITY; 5], &params(1.0, 0, 1.0, 0), 0, 0),
        0
    );
    assert_eq!(
        sample_ref(&[1.0, f32::INFINITY, 2.0], &params(1.0, 0, 1.0, 0), 0, 0),
        1
    );
}

#[test]
fn sampled_tokens_follow_the_processed_distribution() {
    let logits = random_logits(40, 11);
    for p in [params(1.0, 0, 1.0, 5), params(0.7, 12, 0.9, 6)] {
        let mut counts = vec![0u64; 40];
        for row in 0..40_000u32 {
            counts[sample_ref(&logits, &p, 17, row) as usize] += 1;
        }
        check_counts("sample_ref", &counts, &processed_probs(&logits, &p));
    }
}

#[test]
fn chain_emits_the_target_distribution() {
    // Two positions: the first emitted token must follow p_1 whatever q is.
    let v = 30;
    let (p1, p2, p3) = (
        random_dist(v, 0..v, 1),
        random_dist(v, 0..20, 2),
        random_dist(v, 5..v, 3),
    );
    let (q1, q2) = (random_dist(v, 0..25, 4), random_dist(v, 0..v, 5));
    let mut s = Sampler::new(9);
    let (mut first, mut accepted) = (vec![0u64; v], 0usize);
    let n = 40_000u32;
    for row in 0..n {
        let drafts = [s.sample_probs(&q1), s.sample_probs(&q2)];
        let out = verify_chain_ref(&[&p1, &p2, &p3], &[&q1, &q2], &drafts, 77, 3, row).unwrap();
        let tok = if out.accepted > 0 {
            drafts[0]
        } else {
            out.next_token
        };
        first[tok as usize] += 1;
        accepted += out.accepted;
        assert!(out.accepted <= 2);
    }
    check_counts("chain first token", &first, &p1);
    assert!(accepted > n as usize / 2, "acceptance too low: {accepted}");
}

#[test]
fn zero_probability_drafts_are_never_accepted() {
    let p = vec![0.0, 0.5, 0.5];
    let q = vec![0.5, 0.5, 0.0];
    for row in 0..200 {
        // Draft 2 has q = 0; draft 0 has p = 0.
        for x in [0u32, 2] {
            let out = verify_chain_ref(&[&p, &p], &[&q], &[x], 1, 0, row).unwrap();
            assert_eq!(out.accepted, 0);
            assert_ne!(out.next_token, 0, "token 0 has p = 0");
        }
    }
}

#[test]
fn one_hot_target_equal_to_draft_accepts_everything() {
    let v = 17;
    let oh = |t: usize| {
        let mut r = vec![0.0f32; v];
        r[t] = 1.0;
        r
    };
    let rows: Vec<Vec<f32>> = (0..=MAX_DRAFT).map(|i| oh(i % v)).collect();
    let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
    let drafts: Vec<u32> = (0..MAX_DRAFT as u32).map(|i| i % v as u32).collect();
    let out = verify_chain_ref(&refs, &refs[..MAX_DRAFT], &drafts, 5, 0, 0).unwrap();
    assert_eq!(
        (out.accepted, out.next_token),
        (MAX_DRAFT, (MAX_DRAFT % v) as u32)
    );
    let g = verify_chain_greedy(&refs, &drafts).unwrap();
    assert_eq!(g, out);
}

#[test]
fn bad_shapes_are_errors() {
    let p = vec![0.5f32, 0.5];
    assert!(verify_chain_ref(&[&p], &[&p], &[0], 0, 0, 0).is_err());
    assert!(verify_chain_ref(&[&p, &p], &[&p], &[2], 0, 0, 0).is_err());
}
