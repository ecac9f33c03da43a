//! GPU checks of `csrc/tree_verify.cu` for `vpd gpu-check`: the accepted path and every token
//! of sampled tree verification (both child-sampling modes, with deterministic positions mixed
//! in) against `vpd_sampling::kernel_ref::verify_tree_ref`, and of greedy tree verification
//! against `vpd_sampling::verify_tree_greedy`, at odd sizes; zero mismatches allowed. Then the
//! first emitted token's frequencies on the device against the target distribution.
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vpd_sampling::kernel_ref::verify_tree_ref;
use vpd_sampling::{verify_tree_greedy, ChildSampling, Sampler, TokenTree, TreeOutcome};

use super::check::CheckRow;
use super::device::Device;
use super::sampling_check::{bernstein_ratio, p_and_q};
use super::tree_verify::{self, TreeBatch, TreeDraft, TreeOut};
use crate::error::{EngineError, Result};

/// A batch of trees on the host, in the kernel's layout.
struct TreeCase {
    rows: usize,
    vocab: usize,
    max_nodes: usize,
    target: Vec<f32>,
    draft: Vec<f32>,
    has_draft: Vec<u8>,
    tokens: Vec<u32>,
    parents: Vec<i32>,
    counts: Vec<u32>,
}

impl TreeCase {
    fn tree(&self, r: usize) -> TokenTree {
        let n = self.counts[r] as usize;
        let at = r * self.max_nodes;
        TokenTree { tokens: self.tokens[at..at + n].to_vec(), parents: self.parents[at..at + n].to_vec() }
    }

    fn position<'b>(&self, buf: &'b [f32], r: usize, i: usize) -> &'b [f32] {
        let v = self.vocab;
        &buf[(r * (self.max_nodes + 1) + i) * v..][..v]
    }

    /// The CPU's answer for row `r` (`None`: greedy).
    fn expected(&self, r: usize, sampled: Option<(ChildSampling, u64, u64)>) -> Result<TreeOutcome> {
        let tree = self.tree(r);
        let n = tree.len();
        let target: Vec<&[f32]> = (0..=n).map(|i| self.position(&self.target, r, i)).collect();
        let got = match sampled {
            None => verify_tree_greedy(&tree, &target),
            Some((mode, seed, offset)) => {
                let draft: Vec<Option<&[f32]>> = (0..=n)
                    .map(|i| (self.has_draft[r * (self.max_nodes + 1) + i] != 0).then(|| self.position(&self.draft, r, i)))
                    .collect();
                verify_tree_ref(&tree, &target, &draft, mode, seed, offset, r as u32)
            }
        };
        got.map_err(|e| EngineError::Backend(format!("tree check input: {e}")))
    }
}

/// Random trees: node `i` hangs under a random earlier node (or the prefix) and takes a token
/// drawn from its parent position's q, so that acceptance is mixed; some positions are
/// deterministic (no q).
fn tree_case(rng: &mut ChaCha8Rng, rows: usize, vocab: usize, max_nodes: usize) -> TreeCase {
    let mut c = TreeCase {
        rows,
        vocab,
        max_nodes,
        target: Vec::new(),
        draft: Vec::new(),
        has_draft: Vec::new(),
        tokens: vec![0; rows * max_nodes],
        parents: vec![-1; rows * max_nodes],
        counts: Vec::new(),
    };
    let mut s = Sampler::new(rng.random());
    for r in 0..rows {
        let n = if max_nodes == 0 { 0 } else { (r * 5 + 3) % (max_nodes + 1) };
        for i in 0..=max_nodes {
            let (p, q) = p_and_q(rng, vocab, r + i);
            c.target.extend_from_slice(&p);
            c.draft.extend_from_slice(&q);
            c.has_draft.push(u8::from(rng.random::<u32>() % 5 != 0));
        }
        for i in 0..n {
            let parent = rng.random_range(-1..i as i32);
            let q = c.position(&c.draft, r, (parent + 1) as usize).to_vec();
            c.parents[r * max_nodes + i] = parent;
            c.tokens[r * max_nodes + i] = s.sample_probs(&q);
        }
        c.counts.push(n as u32);
    }
    c
}

/// One row's outcome: `(accepted, path, tokens)`.
type RowOutcome = (usize, Vec<u32>, Vec<u32>);

/// Runs the kernel on a case; returns each row's outcome.
fn run(dev: &Device, c: &TreeCase, sampled: Option<(ChildSampling, &[u64], u64)>) -> Result<Vec<RowOutcome>> {
    let (rows, n) = (c.rows, c.max_nodes);
    let (t, tok, par, cnt) = (dev.upload(&c.target)?, dev.upload(&c.tokens)?, dev.upload(&c.parents)?, dev.upload(&c.counts)?);
    let b = TreeBatch { target: &t, tokens: &tok, parents: &par, num_nodes: &cnt, rows, vocab: c.vocab, max_nodes: n };
    let (mut acc, mut path, mut out) =
        (dev.upload(&vec![u32::MAX; rows])?, dev.upload(&vec![u32::MAX; rows * n])?, dev.upload(&vec![u32::MAX; rows * (n + 1)])?);
    let mut o = TreeOut { accepted: &mut acc, path: &mut path, tokens: &mut out };
    match sampled {
        None => tree_verify::verify_tree_greedy(dev, &b, &mut o)?,
        Some((mode, seeds, offset)) => {
            let (q, has, seed) = (dev.upload(&c.draft)?, dev.upload(&c.has_draft)?, dev.upload(seeds)?);
            let mut ws = dev.alloc::<u64>(rows * c.vocab)?;
            let mut d = TreeDraft { draft: &q, has_draft: &has, seed: &seed, workspace: &mut ws, mode };
            tree_verify::verify_tree(dev, &b, &mut d, &mut o, offset)?;
        }
    }
    let (acc, path, out) = (dev.download(&acc, rows)?, dev.download(&path, rows * n)?, dev.download(&out, rows * (n + 1))?);
    Ok((0..rows)
        .map(|r| {
            let a = acc[r] as usize;
            let a_in = a.min(n);
            (a, path[r * n..][..a_in].to_vec(), out[r * (n + 1)..][..=a_in].to_vec())
        })
        .collect())
}

fn same_outcome(got: &(usize, Vec<u32>, Vec<u32>), want: &TreeOutcome, tree: &TokenTree) -> bool {
    let path: Vec<u32> = want.path.iter().map(|&i| i as u32).collect();
    got.0 == want.path.len() && got.1 == path && got.2 == want.emitted(tree)
}

/// Everything in this module, as check rows.
///
/// # Errors
/// A device failure; mismatches are rows with `pass: false`.
pub fn tree_checks(dev: &Device, seed: u64) -> Result<Vec<CheckRow>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7e7e);
    let mut rows = Vec::new();
    for &(n, v, m) in &[(1usize, 1usize, 1usize), (7, 17, 9), (99, 1000, 13), (7, 128_256, 10), (3, 111, 64), (5, 33, 0)] {
        let c = tree_case(&mut rng, n, v, m);
        let seeds: Vec<u64> = (0..n).map(|_| rng.random()).collect();
        let size = format!("rows={n} V={v} nodes<={m} (mismatches)");
        for mode in [ChildSampling::Iid, ChildSampling::WithoutReplacement] {
            let offset = 777;
            let got = run(dev, &c, Some((mode, &seeds, offset)))?;
            let mut bad = 0usize;
            for (r, g) in got.iter().enumerate() {
                bad += usize::from(!same_outcome(g, &c.expected(r, Some((mode, seeds[r], offset)))?, &c.tree(r)));
            }
            rows.push(CheckRow::new(&format!("tree verify tokens ({mode:?})"), size.clone(), bad as f64, 0.0));
        }
        let got = run(dev, &c, None)?;
        let mut bad = 0usize;
        for (r, g) in got.iter().enumerate() {
            bad += usize::from(!same_outcome(g, &c.expected(r, None)?, &c.tree(r)));
        }
        rows.push(CheckRow::new("tree verify greedy tokens", size, bad as f64, 0.0));
    }
    rows.push(first_token_frequencies(dev, seed)?);
    // Bad shapes are errors, not launches.
    let (f, u, i) = (dev.upload(&[0f32; 4])?, dev.upload(&[0u32; 4])?, dev.upload(&[0i32; 4])?);
    let (mut a, mut p, mut t) = (dev.upload(&[0u32; 4])?, dev.upload(&[0u32; 80])?, dev.upload(&[0u32; 80])?);
    let wide = TreeBatch { target: &f, tokens: &u, parents: &i, num_nodes: &u, rows: 0, vocab: 4, max_nodes: 65 };
    let empty = TreeBatch { vocab: 0, max_nodes: 1, ..wide };
    let refused = [&wide, &empty].iter().all(|b| {
        matches!(
            tree_verify::verify_tree_greedy(dev, b, &mut TreeOut { accepted: &mut a, path: &mut p, tokens: &mut t }),
            Err(EngineError::UnsupportedShape { .. })
        )
    });
    rows.push(CheckRow::new("tree bad shapes refused", "nodes=65, V=0".into(), f64::from(u8::from(!refused)), 0.0));
    Ok(rows)
}

/// 100k copies of one tree shape (the prefix has 3 i.i.d. children, the first of them 2),
/// tokens redrawn per row: the first emitted token must follow the root's p.
fn first_token_frequencies(dev: &Device, seed: u64) -> Result<CheckRow> {
    let (rows, v, m) = (100_000usize, 30usize, 5usize);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xbeef);
    let pq: Vec<(Vec<f32>, Vec<f32>)> = (0..=m).map(|i| p_and_q(&mut rng, v, i)).collect();
    let parents = [-1, -1, -1, 0, 0];
    let mut s = Sampler::new(seed ^ 5);
    let mut c = TreeCase {
        rows,
        vocab: v,
        max_nodes: m,
        target: Vec::with_capacity(rows * (m + 1) * v),
        draft: Vec::with_capacity(rows * (m + 1) * v),
        has_draft: Vec::with_capacity(rows * (m + 1)),
        tokens: Vec::with_capacity(rows * m),
        parents: Vec::with_capacity(rows * m),
        counts: vec![m as u32; rows],
    };
    for _ in 0..rows {
        for (i, (p, q)) in pq.iter().enumerate() {
            c.target.extend_from_slice(p);
            c.draft.extend_from_slice(q);
            c.has_draft.push(u8::from(i <= 1));
        }
        for &par in &parents {
            c.parents.push(par);
            c.tokens.push(s.sample_probs(&pq[(par + 1) as usize].1));
        }
    }
    let seeds = vec![seed; rows];
    let got = run(dev, &c, Some((ChildSampling::Iid, &seeds, 9)))?;
    let mut counts = vec![0u64; v];
    got.iter().for_each(|g| counts[(g.2[0] as usize).min(v - 1)] += 1);
    let size = format!("rows={rows} V={v} nodes={m} (|dev|/bound)");
    Ok(CheckRow::new("tree first-token frequencies", size, bernstein_ratio(&counts, &pq[0].0), 1.0))
}
