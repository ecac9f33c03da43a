//! Tree speculative sampling: SpecInfer's multi-step speculative sampling (i.i.d.
//! children, Miao et al. 2024) and Recursive Speculative Decoding (children without
//! replacement, Jeon et al. 2024). The first emitted token must be distributed as the
//! root's p, and the token emitted right after an accepted node as that node's p.
//!
//! Statistical checks use the Bernstein bound of `speculative_support` (per-bin failure
//! probability <= 1e-10, fewer than 10^4 bins in the suite, so a correct implementation
//! fails with probability < 1e-6); zero-probability tokens must have count exactly 0.
//! Each check runs 100k trials with fixed seeds, once for the f64 reference
//! (`verify_tree`) and once for the integer form of the CUDA kernel
//! (`kernel_ref::verify_tree_ref`).

mod speculative_support;

use speculative_support::*;
use vpd_sampling::kernel_ref::verify_tree_ref;
use vpd_sampling::{
    processed_probs, verify_chain, verify_tree, verify_tree_greedy, verify_tree_greedy_ids, ChildSampling, Sampler,
    SamplingParams, SpecError, TokenTree,
};

const TRIALS: usize = 100_000;

/// Which implementation a statistical check runs.
#[derive(Debug, Clone, Copy)]
enum Form {
    /// `verify_tree`: f64, ChaCha draws.
    Reference,
    /// `verify_tree_ref`: the kernel's fixed-point masses and Philox numbers (trial = offset).
    Kernel,
}

const FORMS: [Form; 2] = [Form::Reference, Form::Kernel];

fn verify(
    form: Form,
    tree: &TokenTree,
    target: &[&[f32]],
    draft: &[Option<&[f32]>],
    mode: ChildSampling,
    s: &mut Sampler,
    trial: u64,
) -> vpd_sampling::TreeOutcome {
    match form {
        Form::Reference => verify_tree(tree, target, draft, mode, s),
        Form::Kernel => verify_tree_ref(tree, target, draft, mode, 0x7ee, trial, 3),
    }
    .unwrap()
}

/// Root with 3 children (0, 1, 2); node 0 has children 3, 4; node 1 has 5, 6 and
/// node 3 has 7, 8, 9 (depth 3). Node 2 is a leaf at depth 1.
fn shape() -> TokenTree {
    let parents = vec![-1, -1, -1, 0, 0, 1, 1, 3, 3, 3];
    TokenTree {
        tokens: vec![0; parents.len()],
        parents,
    }
}

/// Redraws every node's token: the children of each node from that node's q, i.i.d.
/// or sequentially without replacement, in index order (the verifier's sibling order).
fn draw_tokens(tree: &mut TokenTree, q: &[Vec<f32>], mode: ChildSampling, s: &mut Sampler) {
    let mut drawn = Vec::new();
    for node in std::iter::once(None).chain((0..tree.len()).map(Some)) {
        let kids: Vec<usize> = tree.children(node).collect();
        if kids.is_empty() {
            continue;
        }
        let q = &q[node.map_or(0, |i| i + 1)];
        drawn.clear();
        match mode {
            ChildSampling::Iid => drawn.extend(kids.iter().map(|_| s.sample_probs(q))),
            ChildSampling::WithoutReplacement => {
                draw_without_replacement(q, kids.len(), s, &mut drawn)
            }
        }
        for (&k, &t) in kids.iter().zip(&drawn) {
            tree.tokens[k] = t;
        }
    }
}

/// Runs the tree and returns `counts[r][token]`: row 0 counts the first emitted token,
/// row `i + 1` the token emitted right after node `i` whenever node `i` was accepted.
fn run_tree(
    form: Form,
    p: &[Vec<f32>],
    q: &[Vec<f32>],
    mode: ChildSampling,
    seed: u64,
) -> Vec<Vec<u64>> {
    let mut tree = shape();
    let target: Vec<&[f32]> = p.iter().map(Vec::as_slice).collect();
    let draft: Vec<Option<&[f32]>> = (0..=tree.len())
        .map(|r| (r == 0 || tree.children(Some(r - 1)).next().is_some()).then_some(&q[r][..]))
        .collect();
    let mut drafter = Sampler::new(seed);
    let mut verifier = Sampler::new(seed ^ 0x7ee);
    let mut counts = vec![vec![0u64; p[0].len()]; p.len()];
    for trial in 0..TRIALS as u64 {
        draw_tokens(&mut tree, q, mode, &mut drafter);
        let out = verify(form, &tree, &target, &draft, mode, &mut verifier, trial);
        let emitted = out.emitted(&tree);
        // Row before each emitted token: the root, then each accepted node.
        let rows = std::iter::once(0).chain(out.path.iter().map(|&i| i + 1));
        for (r, &t) in rows.zip(&emitted) {
            counts[r][t as usize] += 1;
        }
    }
    counts
}

/// `busy` lists rows that must have at least 1000 conditioned samples, so that those
/// checks are not vacuous.
fn check_tree(
    what: &str,
    p: &[Vec<f32>],
    q: &[Vec<f32>],
    mode: ChildSampling,
    seed: u64,
    busy: &[usize],
) {
    for form in FORMS {
        let counts = run_tree(form, p, q, mode, seed);
        assert_eq!(counts[0].iter().sum::<u64>(), TRIALS as u64);
        for (r, c) in counts.iter().enumerate() {
            check_counts(
                &format!("{what} {mode:?} {form:?}, after row {r}"),
                c,
                &p[r],
            );
        }
        for &r in busy {
            assert_enough(
                &format!("{what} {mode:?} {form:?}, row {r}"),
                &counts[r],
                1_000,
            );
        }
    }
}

/// Distinct random p per row and q per row over 12 tokens; q misses tokens 0..2 and
/// some p rows miss tokens 9..12, so zero masses on both sides are exercised.
fn random_rows(seed: u64) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let n = shape().len() + 1;
    let p = (0..n)
        .map(|r| random_dist(12, 0..if r % 2 == 0 { 12 } else { 9 }, seed + r as u64))
        .collect();
    let q = (0..n)
        .map(|r| random_dist(12, 2..12, seed + 100 + r as u64))
        .collect();
    (p, q)
}

#[test]
fn iid_children_emit_root_p_and_child_p() {
    let (p, q) = random_rows(1);
    check_tree("random", &p, &q, ChildSampling::Iid, 10, &[1, 2, 3, 4]);
}

#[test]
fn without_replacement_children_emit_root_p_and_child_p() {
    let (p, q) = random_rows(2);
    check_tree(
        "random",
        &p,
        &q,
        ChildSampling::WithoutReplacement,
        11,
        &[1, 2, 3, 4],
    );
}

#[test]
fn processed_distributions_in_both_modes() {
    let params = SamplingParams {
        temperature: 0.8,
        top_k: 10,
        top_p: 0.95,
        seed: 0,
    };
    let rows = |base: u64| -> Vec<Vec<f32>> {
        (0..=shape().len() as u64)
            .map(|r| processed_probs(&random_logits(16, base + r), &params))
            .collect()
    };
    let (p, q) = (rows(300), rows(400));
    check_tree("top-k/top-p", &p, &q, ChildSampling::Iid, 12, &[1, 2]);
    check_tree(
        "top-k/top-p",
        &p,
        &q,
        ChildSampling::WithoutReplacement,
        13,
        &[1, 2],
    );
}

#[test]
fn q_equal_to_p_accepts_the_first_child_at_every_level() {
    let (p, _) = random_rows(3);
    for form in FORMS {
        let counts = run_tree(form, &p, &p, ChildSampling::WithoutReplacement, 14);
        // With q = p the first child is always accepted: the path is 0 -> 3 -> 7.
        for r in [1, 4, 8] {
            assert_eq!(
                counts[r].iter().sum::<u64>(),
                TRIALS as u64,
                "{form:?} row {r}"
            );
            check_counts(&format!("q = p {form:?}, row {r}"), &counts[r], &p[r]);
        }
    }
}

#[test]
fn deterministic_children_emit_root_p() {
    // n-gram style candidates: no q rows; each child is a one-hot proposal.
    let tree = TokenTree {
        tokens: vec![3, 7, 3, 1],
        parents: vec![-1, -1, -1, 1],
    };
    let p: Vec<Vec<f32>> = (0..5).map(|r| random_dist(10, 0..10, 500 + r)).collect();
    let target: Vec<&[f32]> = p.iter().map(Vec::as_slice).collect();
    let draft = vec![None; 5];
    for form in FORMS {
        let mut s = Sampler::new(15);
        let mut first = vec![0u64; 10];
        let mut after_node1 = vec![0u64; 10];
        for trial in 0..TRIALS as u64 {
            let out = verify(
                form,
                &tree,
                &target,
                &draft,
                ChildSampling::Iid,
                &mut s,
                trial,
            );
            let emitted = out.emitted(&tree);
            first[emitted[0] as usize] += 1;
            if out.path.first() == Some(&1) {
                after_node1[emitted[1] as usize] += 1;
            }
        }
        check_counts(&format!("deterministic {form:?}, first"), &first, &p[0]);
        check_counts(
            &format!("deterministic {form:?}, after node 1"),
            &after_node1,
            &p[2],
        );
        assert_enough("deterministic, after node 1", &after_node1, 2_000);
    }
}

#[test]
fn chain_tree_matches_verify_chain_draw_for_draw() {
    // Same randomness consumption, so equal outcomes per seed (equal in distribution).
    let p: Vec<Vec<f32>> = (0..4).map(|r| random_dist(15, 0..15, 600 + r)).collect();
    let q: Vec<Vec<f32>> = (0..3).map(|r| random_dist(15, 0..15, 700 + r)).collect();
    let target: Vec<&[f32]> = p.iter().map(Vec::as_slice).collect();
    let draft: Vec<&[f32]> = q.iter().map(Vec::as_slice).collect();
    let tree_q: Vec<Option<&[f32]>> = draft.iter().map(|&r| Some(r)).chain([None]).collect();
    let mut drafter = Sampler::new(16);
    for mode in [ChildSampling::Iid, ChildSampling::WithoutReplacement] {
        let (mut a, mut b) = (Sampler::new(17), Sampler::new(17));
        for _ in 0..20_000 {
            let drafts: Vec<u32> = draft.iter().map(|r| drafter.sample_probs(r)).collect();
            let chain = verify_chain(&target, &draft, &drafts, &mut a).unwrap();
            let tree = TokenTree::chain(&drafts);
            let out = verify_tree(&tree, &target, &tree_q, mode, &mut b).unwrap();
            assert_eq!(out.path, (0..chain.accepted).collect::<Vec<_>>());
            assert_eq!(out.next_token, chain.next_token);
        }
    }
}

#[test]
fn zero_probability_children_are_never_accepted() {
    let mut p = random_dist(6, 0..6, 800);
    let mut q = random_dist(6, 0..6, 801);
    p[1] = 0.0;
    q[4] = 0.0;
    let p = p.as_slice();
    let tree = TokenTree {
        tokens: vec![1, 4, 1],
        parents: vec![-1, -1, -1],
    };
    let draft = [Some(&q[..]), None, None, None];
    let mut s = Sampler::new(802);
    for form in FORMS {
        for mode in [ChildSampling::Iid, ChildSampling::WithoutReplacement] {
            for trial in 0..10_000 {
                let out = verify(form, &tree, &[p; 4], &draft, mode, &mut s, trial);
                assert!(
                    out.path.is_empty(),
                    "{mode:?} {form:?} accepted {:?}",
                    out.path
                );
                assert_ne!(out.next_token, 1);
            }
        }
    }
}

#[test]
fn greedy_tree_follows_the_argmax_path() {
    let tree = shape();
    let logits: Vec<Vec<f32>> = (0..=10).map(|r| random_logits(8, 900 + r)).collect();
    let rows: Vec<&[f32]> = logits.iter().map(Vec::as_slice).collect();
    let best = |r: usize| vpd_sampling::argmax(rows[r]);
    let mut tree_ok = tree.clone();
    // Root children: node 1 is the argmax; under node 1, node 6 is; node 6 is a leaf.
    tree_ok.tokens = vec![
        (best(0) + 1) % 8,
        best(0),
        best(0),
        0,
        0,
        (best(2) + 1) % 8,
        best(2),
        0,
        0,
        0,
    ];
    // The argmax-only form (a backend reducing rows on the device) gives the same outcome.
    let ids: Vec<u32> = (0..rows.len()).map(best).collect();
    let by_ids = |t: &TokenTree| verify_tree_greedy_ids(t, &ids).unwrap();
    let out = verify_tree_greedy(&tree_ok, &rows).unwrap();
    assert_eq!(out.path, vec![1, 6]);
    assert_eq!(out.next_token, best(7));
    assert_eq!((by_ids(&tree_ok).path, by_ids(&tree_ok).next_token), (out.path, out.next_token));
    // No root child matches: nothing accepted, emit the root argmax.
    tree_ok.tokens[1] = (best(0) + 2) % 8;
    tree_ok.tokens[2] = (best(0) + 3) % 8;
    let out = verify_tree_greedy(&tree_ok, &rows).unwrap();
    assert_eq!((out.path.len(), out.next_token), (0, best(0)));
    assert_eq!((by_ids(&tree_ok).path, by_ids(&tree_ok).next_token), (out.path, out.next_token));
    // One id per row or an error.
    assert!(matches!(
        verify_tree_greedy_ids(&tree_ok, &ids[1..]),
        Err(vpd_sampling::SpecError::RowCount { expected: 11, got: 10, .. })
    ));
}

#[test]
fn accepted_leaf_samples_a_bonus_token_from_its_p() {
    let p = random_dist(5, 0..5, 1000);
    let p = p.as_slice();
    let bonus = one_hot_f32(5, 2);
    let tree = TokenTree {
        tokens: vec![4, 3],
        parents: vec![-1, 0],
    };
    let mut s = Sampler::new(1001);
    for form in FORMS {
        let out = verify(
            form,
            &tree,
            &[p, p, &bonus],
            &[Some(p), Some(p), None],
            ChildSampling::Iid,
            &mut s,
            0,
        );
        let want = vpd_sampling::TreeOutcome {
            path: vec![0, 1],
            next_token: 2,
        };
        assert_eq!(out, want, "{form:?}");
    }
}

#[test]
fn tree_structure_helpers() {
    let t = shape();
    assert!(t.validate().is_ok());
    assert_eq!(t.children(None).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert_eq!(t.children(Some(3)).collect::<Vec<_>>(), vec![7, 8, 9]);
    assert_eq!(t.children(Some(2)).count(), 0);
    assert_eq!(
        (t.depth(0), t.depth(4), t.depth(9), t.max_depth()),
        (1, 2, 3, 3)
    );
    assert_eq!(TokenTree::chain(&[5, 6, 7]).parents, vec![-1, 0, 1]);
}

#[test]
fn malformed_trees_and_rows_return_errors() {
    let p: &[f32] = &[0.25; 4];
    let mut s = Sampler::new(0);
    let iid = ChildSampling::Iid;
    let bad = TokenTree {
        tokens: vec![1, 2],
        parents: vec![-1, 1],
    };
    assert!(matches!(bad.validate(), Err(SpecError::InvalidTree(_))));
    let err = verify_tree(&bad, &[p; 3], &[Some(p), None, None], iid, &mut s).unwrap_err();
    assert!(err.to_string().contains("node 1 has parent 1"), "{err}");
    let uneven = TokenTree {
        tokens: vec![1],
        parents: vec![],
    };
    assert!(uneven.validate().is_err());
    let t = TokenTree {
        tokens: vec![1, 2],
        parents: vec![-1, 0],
    };
    let err = verify_tree(&t, &[p; 2], &[Some(p), Some(p), None], iid, &mut s).unwrap_err();
    assert_eq!(
        err,
        SpecError::RowCount {
            what: "target",
            expected: 3,
            got: 2
        }
    );
    let err = verify_tree(&t, &[p; 3], &[Some(p), None], iid, &mut s).unwrap_err();
    assert_eq!(
        err,
        SpecError::RowCount {
            what: "draft",
            expected: 3,
            got: 2
        }
    );
    let short: &[f32] = &[0.5, 0.5];
    let err = verify_tree(&t, &[p; 3], &[Some(p), Some(short), None], iid, &mut s).unwrap_err();
    assert!(
        matches!(
            err,
            SpecError::RowLength {
                what: "draft",
                row: 1,
                ..
            }
        ),
        "{err}"
    );
    let big = TokenTree {
        tokens: vec![1, 9],
        parents: vec![-1, 0],
    };
    let err = verify_tree(&big, &[p; 3], &[Some(p), Some(p), None], iid, &mut s).unwrap_err();
    assert_eq!(
        err,
        SpecError::TokenOutOfRange {
            index: 1,
            token: 9,
            vocab: 4
        }
    );
    assert!(verify_tree_greedy(&t, &[p; 2]).is_err());
}

#[test]
fn kernel_form_refuses_what_the_reference_refuses_and_oversized_trees() {
    let p: &[f32] = &[0.25; 4];
    let iid = ChildSampling::Iid;
    let bad = TokenTree {
        tokens: vec![1, 2],
        parents: vec![-1, 1],
    };
    assert!(matches!(
        verify_tree_ref(&bad, &[p; 3], &[Some(p), None, None], iid, 1, 0, 0),
        Err(SpecError::InvalidTree(_))
    ));
    let oov = TokenTree {
        tokens: vec![1, 9],
        parents: vec![-1, 0],
    };
    assert!(matches!(
        verify_tree_ref(&oov, &[p; 3], &[Some(p), Some(p), None], iid, 1, 0, 0),
        Err(SpecError::TokenOutOfRange { token: 9, .. })
    ));
    let n = vpd_sampling::kernel_ref::MAX_TREE_NODES + 1;
    let wide = TokenTree {
        tokens: vec![0; n],
        parents: vec![-1; n],
    };
    let rows = vec![p; n + 1];
    let err = verify_tree_ref(&wide, &rows, &vec![None; n + 1], iid, 1, 0, 0).unwrap_err();
    assert!(err.to_string().contains("at most 64"), "{err}");
}

#[test]
fn kernel_form_keeps_totals_in_range_for_unnormalised_rows() {
    use vpd_sampling::kernel_ref::{fit_shift, TOTAL_BITS};
    assert_eq!(fit_shift(0), 0);
    assert_eq!(fit_shift((1 << TOTAL_BITS) - 1), 0);
    assert_eq!(fit_shift(1 << TOTAL_BITS), 1);
    assert_eq!(fit_shift(u128::MAX), 128 - TOTAL_BITS);
    // Rows far from normalised (every entry clamped to 1) still verify and draw in range.
    let ones = vec![1.0f32; 5000];
    let half = vec![0.5f32; 5000];
    let tree = TokenTree {
        tokens: vec![3, 4, 5],
        parents: vec![-1, -1, 1],
    };
    for seed in 0..50 {
        let out = verify_tree_ref(
            &tree,
            &[&ones, &ones, &half, &ones],
            &[Some(&half), None, Some(&ones), None],
            ChildSampling::WithoutReplacement,
            seed,
            0,
            0,
        )
        .unwrap();
        assert!(out.next_token < 5000);
    }
}
