//! Chain speculative sampling (Leviathan et al. 2023; Chen et al. 2023): every emitted
//! token, including the residual and the bonus token, must be distributed as the target.
//!
//! Statistical checks use the Bernstein bound of `speculative_support` (per-bin failure
//! probability <= 1e-10, fewer than 10^4 bins in the suite, so a correct implementation
//! fails with probability < 1e-6); zero-probability tokens must have count exactly 0.
//! Each check runs 100k trials with fixed seeds.

mod speculative_support;

use speculative_support::*;
use vpd_sampling::{
    one_hot, processed_probs, verify_chain, verify_chain_greedy, verify_chain_one_hot, Sampler,
    SamplingParams, SpecError,
};

const TRIALS: usize = 100_000;

/// Draws `x_i ~ q_i` (or uses `fixed` drafts when given), verifies, and counts the
/// token emitted at each position j among trials that reached j (accepted >= j).
/// Returns `counts[j][token]` for j = 0..=L.
fn run_chain(p: &[Vec<f32>], q: &[Vec<f32>], fixed: Option<&[u32]>, seed: u64) -> Vec<Vec<u64>> {
    let l = p.len() - 1;
    let vocab = p[0].len();
    let target: Vec<&[f32]> = p.iter().map(Vec::as_slice).collect();
    let draft: Vec<&[f32]> = q.iter().map(Vec::as_slice).collect();
    let mut drafter = Sampler::new(seed);
    let mut verifier = Sampler::new(seed ^ 0x5eed);
    let mut counts = vec![vec![0u64; vocab]; l + 1];
    let mut drafts = vec![0u32; l];
    for _ in 0..TRIALS {
        let out = match fixed {
            Some(f) => verify_chain_one_hot(&target, f, &mut verifier),
            None => {
                for (x, qi) in drafts.iter_mut().zip(&draft) {
                    *x = drafter.sample_probs(qi);
                }
                verify_chain(&target, &draft, &drafts, &mut verifier)
            }
        }
        .unwrap();
        let accepted = fixed.unwrap_or(&drafts)[..out.accepted].iter();
        for (j, &t) in accepted.chain([&out.next_token]).enumerate() {
            counts[j][t as usize] += 1;
        }
    }
    counts
}

/// Same `p` and `q` at every position: every emitted token must be marginally `p`.
fn check_every_position(what: &str, p: Vec<f32>, q: Vec<f32>, l: usize, seed: u64) {
    let counts = run_chain(&vec![p.clone(); l + 1], &vec![q; l], None, seed);
    for (j, c) in counts.iter().enumerate() {
        check_counts(&format!("{what}, position {j}"), c, &p);
    }
}

#[test]
fn random_p_and_q_emit_p_at_every_position() {
    check_every_position(
        "random",
        random_dist(20, 0..20, 1),
        random_dist(20, 0..20, 2),
        4,
        10,
    );
}

#[test]
fn one_hot_p_emits_only_its_token() {
    let counts = run_chain(
        &vec![one_hot_f32(16, 5); 4],
        &vec![random_dist(16, 0..16, 3); 3],
        None,
        11,
    );
    for (j, c) in counts.iter().enumerate() {
        check_counts(&format!("one-hot p, position {j}"), c, &one_hot_f32(16, 5));
    }
    // A one-hot q that agrees with a one-hot p accepts everything.
    let counts = run_chain(
        &vec![one_hot_f32(16, 5); 4],
        &vec![one_hot_f32(16, 5); 3],
        None,
        12,
    );
    assert_eq!(counts[3][5], TRIALS as u64);
}

#[test]
fn one_hot_q_deterministic_drafts_emit_p() {
    // Peaked at token 2 (p ~ 0.52) so all-accepted chains of fixed proposals are common.
    let p: Vec<f32> = random_dist(24, 0..24, 4)
        .iter()
        .enumerate()
        .map(|(i, &x)| 0.5 * x + if i == 2 { 0.5 } else { 0.0 })
        .collect();
    // Fixed n-gram style proposals: a likely one repeated, and an unlikely one first.
    for (drafts, seed) in [(&[2u32, 2, 2][..], 13), (&[23, 2][..], 113)] {
        let rows = vec![p.clone(); drafts.len() + 1];
        let counts = run_chain(&rows, &[], Some(drafts), seed);
        for (j, c) in counts.iter().enumerate() {
            check_counts(&format!("one-hot q {drafts:?}, position {j}"), c, &p);
            assert_enough(&format!("one-hot q {drafts:?}, position {j}"), c, 250);
        }
    }
}

#[test]
fn disjoint_supports_reject_and_emit_p() {
    let p = random_dist(20, 0..10, 5);
    let counts = run_chain(
        &vec![p.clone(); 4],
        &vec![random_dist(20, 10..20, 6); 3],
        None,
        14,
    );
    check_counts("disjoint, position 0", &counts[0], &p);
    assert!(
        counts[1].iter().all(|&c| c == 0),
        "a draft outside p's support was accepted"
    );
}

#[test]
fn q_equal_to_p_emits_p_everywhere_and_bonus() {
    let p = random_dist(30, 0..30, 7);
    let counts = run_chain(&vec![p.clone(); 4], &vec![p.clone(); 3], None, 15);
    for (j, c) in counts.iter().enumerate() {
        assert_eq!(
            c.iter().sum::<u64>(),
            TRIALS as u64,
            "position {j} not always reached"
        );
        check_counts(&format!("q = p, position {j}"), c, &p);
    }
}

#[test]
fn partially_overlapping_supports_with_zero_masses_emit_p() {
    // q puts mass where p is 0 (tokens 16..30) and p where q is 0 (tokens 0..8).
    let p = random_dist(40, 0..16, 8);
    let q = random_dist(40, 8..30, 9);
    check_every_position("overlap", p, q, 3, 16);
}

#[test]
fn top_k_and_top_p_processed_distributions_emit_p() {
    let params = SamplingParams {
        temperature: 0.9,
        top_k: 30,
        top_p: 0.9,
        seed: 0,
    };
    let p = processed_probs(&random_logits(50, 20), &params);
    let q = processed_probs(&random_logits(50, 21), &params);
    check_every_position("top-k/top-p", p, q, 3, 17);
    let params = SamplingParams {
        temperature: 1.3,
        top_k: 0,
        top_p: 0.8,
        seed: 0,
    };
    let p = processed_probs(&random_logits(50, 22), &params);
    let q = processed_probs(&random_logits(50, 23), &params);
    check_every_position("top-p only", p, q, 3, 18);
}

#[test]
fn position_dependent_p_first_token_and_token_after_acceptance() {
    let vocab = 12;
    let p: Vec<Vec<f32>> = (0..4)
        .map(|i| random_dist(vocab, 0..vocab, 30 + i))
        .collect();
    let q: Vec<Vec<f32>> = (0..3)
        .map(|i| random_dist(vocab, 2..vocab, 40 + i))
        .collect();
    let counts = run_chain(&p, &q, None, 19);
    for (j, c) in counts.iter().enumerate() {
        // Position j exists iff x_1..x_j were accepted; given that, it must be p_{j+1}.
        check_counts(&format!("per-position p, position {j}"), c, &p[j]);
        assert_enough(&format!("position {j}"), c, 2_000);
    }
}

#[test]
fn zero_probability_drafts_are_never_accepted() {
    let mut p = random_dist(10, 0..10, 50);
    let mut q = random_dist(10, 0..10, 51);
    p[3] = 0.0; // draft 3: q > 0, p = 0
    q[7] = 0.0; // draft 7: q = 0 (impossible under q), p > 0
    let mut s = Sampler::new(52);
    for _ in 0..10_000 {
        for x in [3, 7] {
            let out = verify_chain(&[&p, &p], &[&q], &[x], &mut s).unwrap();
            assert_eq!(out.accepted, 0, "draft {x} accepted");
            assert_ne!(
                out.next_token, 3,
                "residual emitted a zero-probability token"
            );
        }
        let out = verify_chain_one_hot(&[&p, &p], &[3], &mut s).unwrap();
        assert_eq!(out.accepted, 0);
    }
}

#[test]
fn identical_p_and_q_accepts_everything() {
    let p = random_dist(25, 0..25, 60);
    let p = p.as_slice();
    let mut s = Sampler::new(61);
    let mut drafter = Sampler::new(62);
    for _ in 0..10_000 {
        let drafts: Vec<u32> = (0..5).map(|_| drafter.sample_probs(p)).collect();
        let out = verify_chain(&[p; 6], &[p; 5], &drafts, &mut s).unwrap();
        assert_eq!(out.accepted, 5);
    }
}

#[test]
fn all_accepted_samples_a_bonus_token() {
    let p = random_dist(8, 0..8, 70);
    let bonus = one_hot_f32(8, 6);
    let mut s = Sampler::new(71);
    for x in 0..8u32 {
        let out = verify_chain(&[&p, &p, &bonus], &[&p, &p], &[x, 7 - x], &mut s).unwrap();
        assert_eq!(
            out,
            vpd_sampling::ChainOutcome {
                accepted: 2,
                next_token: 6
            }
        );
    }
    // An empty chain is just a draw from p_1.
    let out = verify_chain(&[&bonus], &[], &[], &mut s).unwrap();
    assert_eq!((out.accepted, out.next_token), (0, 6));
}

#[test]
fn one_hot_rows_match_the_one_hot_entry_point_draw_for_draw() {
    let p = random_dist(20, 0..20, 80);
    let p = p.as_slice();
    let drafts = [4u32, 9, 4];
    let q: Vec<Vec<f32>> = drafts.iter().map(|&x| one_hot(20, x)).collect();
    let q: Vec<&[f32]> = q.iter().map(Vec::as_slice).collect();
    let (mut a, mut b) = (Sampler::new(81), Sampler::new(81));
    for _ in 0..5_000 {
        let x = verify_chain(&[p; 4], &q, &drafts, &mut a).unwrap();
        assert_eq!(x, verify_chain_one_hot(&[p; 4], &drafts, &mut b).unwrap());
    }
}

#[test]
fn greedy_chain_accepts_the_argmax_prefix() {
    let rows: Vec<Vec<f32>> = (0..4).map(|i| random_logits(30, 90 + i)).collect();
    let rows: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
    let best: Vec<u32> = rows.iter().map(|r| vpd_sampling::argmax(r)).collect();
    let all = verify_chain_greedy(&rows, &best[..3]).unwrap();
    assert_eq!((all.accepted, all.next_token), (3, best[3]));
    let mut drafts = best[..3].to_vec();
    drafts[1] = (best[1] + 1) % 30;
    let out = verify_chain_greedy(&rows, &drafts).unwrap();
    assert_eq!((out.accepted, out.next_token), (1, best[1]));
    drafts[0] = (best[0] + 1) % 30;
    let out = verify_chain_greedy(&rows, &drafts).unwrap();
    assert_eq!((out.accepted, out.next_token), (0, best[0]));
}

#[test]
fn mismatched_lengths_and_bad_tokens_return_errors() {
    let p = vec![0.25f32; 4];
    let short = vec![0.5f32; 2];
    let mut s = Sampler::new(0);
    let err = verify_chain(&[&p, &p], &[&p], &[1, 2], &mut s).unwrap_err();
    assert_eq!(
        err,
        SpecError::RowCount {
            what: "target",
            expected: 3,
            got: 2
        }
    );
    let err = verify_chain(&[&p, &p], &[], &[1], &mut s).unwrap_err();
    assert_eq!(
        err,
        SpecError::RowCount {
            what: "draft",
            expected: 1,
            got: 0
        }
    );
    let err = verify_chain(&[&p, &short], &[&p], &[1], &mut s).unwrap_err();
    assert!(
        matches!(
            err,
            SpecError::RowLength {
                what: "target",
                row: 1,
                ..
            }
        ),
        "{err}"
    );
    let err = verify_chain(&[&p, &p], &[&short], &[1], &mut s).unwrap_err();
    assert!(
        matches!(
            err,
            SpecError::RowLength {
                what: "draft",
                row: 0,
                ..
            }
        ),
        "{err}"
    );
    let err = verify_chain(&[&p, &p], &[&p], &[4], &mut s).unwrap_err();
    assert_eq!(
        err,
        SpecError::TokenOutOfRange {
            index: 0,
            token: 4,
            vocab: 4
        }
    );
    assert!(err.to_string().contains("token id 4"));
    assert_eq!(
        verify_chain_one_hot(&[&[]], &[], &mut s).unwrap_err(),
        SpecError::EmptyVocab
    );
    assert!(verify_chain_greedy(&[&p], &[0]).is_err());
    assert!(verify_chain_one_hot(&[&p, &p], &[9], &mut s).is_err());
}
