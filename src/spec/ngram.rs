//! Prompt lookup decoding (Saxena 2023, "Prompt Lookup Decoding"; vLLM's `ngram` proposer):
//! find the most recent earlier occurrence of the context's last N tokens and propose the
//! tokens that followed it. Model-free and deterministic, so proposals are checked as
//! one-hot drafts. Trees take the continuations of several distinct earlier matches as
//! sibling branches.
use vpd_sampling::{ChildSampling, Sampler, TokenTree};

use super::drafter::{DraftQuery, Drafter, Proposal};
use super::TreeShape;
use crate::error::Result;

pub struct NgramDrafter {
    n: usize,
}

impl NgramDrafter {
    pub fn new(n: usize) -> Self {
        Self { n: n.max(1) }
    }

    /// Start positions (just after each match) of earlier occurrences of the last `n` tokens,
    /// most recent first, trying shorter suffixes down to 1 when the full one never recurs.
    fn matches(&self, ctx: &[u32]) -> Vec<usize> {
        for n in (1..=self.n.min(ctx.len().saturating_sub(1))).rev() {
            let key = &ctx[ctx.len() - n..];
            let found: Vec<usize> = (0..ctx.len() - n).rev().filter(|&s| &ctx[s..s + n] == key).map(|s| s + n).collect();
            if !found.is_empty() {
                return found;
            }
        }
        Vec::new()
    }
}

impl Drafter for NgramDrafter {
    fn describe(&self) -> String {
        format!("ngram:{}", self.n)
    }

    fn begin(&mut self, _seq: u64) -> Result<()> {
        Ok(())
    }

    fn propose(&mut self, queries: &[DraftQuery<'_>]) -> Result<Vec<Proposal>> {
        Ok(queries
            .iter()
            .map(|q| {
                let Some(&start) = self.matches(q.context).first() else { return Proposal::empty() };
                let end = (start + q.len).min(q.context.len());
                let tree = TokenTree::chain(&q.context[start..end]);
                let rows = tree.len() + 1;
                Proposal { tree, q: vec![None; rows], mode: ChildSampling::Iid }
            })
            .collect())
    }

    fn propose_tree(&mut self, query: &DraftQuery<'_>, shape: &TreeShape, _sampler: &mut Sampler) -> Result<Proposal> {
        // A trie of the continuations of up to `width` distinct matches, each `depth` long.
        let ctx = query.context;
        let mut tokens = Vec::new();
        let mut parents: Vec<i32> = Vec::new();
        let mut branches = 0;
        for start in self.matches(ctx) {
            if branches == shape.width || tokens.len() >= shape.budget {
                break;
            }
            let cont = &ctx[start..(start + shape.depth).min(ctx.len())];
            let mut parent = -1i32;
            let mut added = false;
            for &t in cont {
                let existing = (0..tokens.len()).find(|&i| parents[i] == parent && tokens[i] == t);
                parent = match existing {
                    Some(i) => i as i32,
                    None if tokens.len() < shape.budget => {
                        tokens.push(t);
                        parents.push(parent);
                        added = true;
                        tokens.len() as i32 - 1
                    }
                    None => break,
                };
            }
            branches += usize::from(added);
        }
        let rows = tokens.len() + 1;
        Ok(Proposal { tree: TokenTree { tokens, parents }, q: vec![None; rows], mode: ChildSampling::Iid })
    }

    fn rollback(&mut self, _seq: u64, _committed: usize) -> Result<()> {
        Ok(())
    }

    fn end(&mut self, _seq: u64) {}
}

#[cfg(test)]
mod tests {
    use vpd_sampling::SamplingParams;

    use super::*;

    fn query<'a>(ctx: &'a [u32], len: usize, p: &'a SamplingParams) -> DraftQuery<'a> {
        DraftQuery { seq: 0, context: ctx, len, sampling: p }
    }

    #[test]
    fn proposes_the_continuation_of_the_latest_match() {
        let p = SamplingParams::greedy();
        let ctx = [1, 2, 3, 4, 9, 1, 2, 3, 5, 6, 1, 2, 3];
        let out = NgramDrafter::new(3).propose(&[query(&ctx, 2, &p)]).unwrap();
        assert_eq!(out[0].tree.tokens, vec![5, 6]);
    }

    #[test]
    fn no_match_proposes_nothing() {
        let p = SamplingParams::greedy();
        let out = NgramDrafter::new(2).propose(&[query(&[1, 2, 3], 4, &p)]).unwrap();
        assert!(out[0].tree.is_empty());
    }

    #[test]
    fn trees_branch_on_distinct_continuations() {
        let p = SamplingParams::greedy();
        let ctx = [7, 1, 4, 4, 7, 2, 5, 5, 7];
        let shape = TreeShape { width: 2, depth: 2, budget: 64 };
        let t = NgramDrafter::new(1).propose_tree(&query(&ctx, 0, &p), &shape, &mut Sampler::new(0)).unwrap();
        assert_eq!(t.tree.tokens, vec![2, 5, 1, 4]);
        assert_eq!(t.tree.parents, vec![-1, 0, -1, 2]);
        t.tree.validate().unwrap();
    }
}
