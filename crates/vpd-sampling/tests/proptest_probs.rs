//! Properties of `processed_probs` on random logits and parameters.

use proptest::prelude::*;
use vpd_sampling::{processed_probs, SamplingParams};

fn logit() -> impl Strategy<Value = f32> {
    prop_oneof![9 => -10.0f32..10.0, 1 => Just(f32::NAN), 1 => Just(f32::NEG_INFINITY)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn kept_set_is_a_normalised_minimal_top_prefix(
        logits in prop::collection::vec(logit(), 1..40),
        temperature in 0.05f32..4.0,
        top_k in 0usize..45,
        top_p in 0.01f32..=1.0,
    ) {
        let p = SamplingParams { temperature, top_k, top_p, seed: 0 };
        prop_assert!(p.validate().is_ok());
        let probs = processed_probs(&logits, &p);
        prop_assert_eq!(probs.len(), logits.len());
        prop_assert!(probs.iter().all(|x| x.is_finite() && *x >= 0.0));
        let sum: f64 = probs.iter().map(|&x| f64::from(x)).sum();
        prop_assert!((sum - 1.0).abs() < 1e-5, "sum {}", sum);

        let kept: Vec<usize> = (0..logits.len()).filter(|&i| probs[i] > 0.0).collect();
        prop_assert!(!kept.is_empty());
        if top_k > 0 {
            prop_assert!(kept.len() <= top_k);
        }
        // Top prefix: no dropped finite logit beats a kept one.
        let clean = |x: f32| if x.is_nan() { f32::NEG_INFINITY } else { x };
        let worst_kept = kept.iter().map(|&i| clean(logits[i])).fold(f32::INFINITY, f32::min);
        for i in (0..logits.len()).filter(|i| !kept.contains(i)) {
            prop_assert!(clean(logits[i]) <= worst_kept);
        }
        // Minimal nucleus: the top-k renormalised mass of the kept set minus its least
        // likely member is below top_p (else a smaller set would have sufficed).
        let mut ranked: Vec<usize> = (0..logits.len()).collect();
        ranked.sort_by(|&a, &b| clean(logits[b]).total_cmp(&clean(logits[a])).then(a.cmp(&b)));
        let k = if top_k == 0 { logits.len() } else { top_k.min(logits.len()) };
        let m = f64::from(clean(logits[ranked[0]])) / f64::from(temperature);
        let w = |i: usize| (f64::from(clean(logits[i])) / f64::from(temperature) - m).exp();
        let z: f64 = ranked[..k].iter().map(|&i| w(i)).sum();
        if m.is_finite() && top_p < 1.0 {
            let below: f64 = ranked[..kept.len() - 1].iter().map(|&i| w(i) / z).sum();
            prop_assert!(below < f64::from(top_p) + 1e-9, "{} >= {}", below, top_p);
        }
    }
}
