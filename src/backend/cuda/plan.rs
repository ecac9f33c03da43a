//! The host half of "plan, then run" for the CUDA backend: a [`StepPlan`] flattened into the
//! plain arrays the kernels read (one row per new token, block tables padded to one stride).
//! No device here, so all of it is unit-tested on machines without a GPU; `visible_positions`
//! mirrors the attention kernel's masking walk and is tested against [`SeqStep::attends`].
use crate::backend::{LogitsWanted, StepPlan};
use crate::error::{EngineError, Result};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlatPlan {
    /// `[T]` token ids.
    pub tokens: Vec<u32>,
    /// `[T]` RoPE positions (`start_pos + depth` in a tree).
    pub positions: Vec<i32>,
    /// `[T]` cache slot each token's K/V is written to (`start_pos + i` through the table).
    pub slots: Vec<u32>,
    /// `[T]` sequence of each token.
    pub tok_seq: Vec<u32>,
    /// `[S + 1]` first token of each sequence.
    pub seq_tok_start: Vec<u32>,
    /// `[S]` tokens already cached.
    pub seq_start_pos: Vec<u32>,
    /// `[S]` 1 for a token tree.
    pub seq_is_tree: Vec<u32>,
    /// `[T]` parent among the sequence's new tokens (`-1`: the prefix). Chains: `i - 1`.
    pub parents: Vec<i32>,
    /// `[S, max_blocks]`, padded with block 0 (never read: positions stay inside each table).
    pub block_tables: Vec<u32>,
    pub max_blocks: usize,
    /// Most new tokens of any tree sequence (0 without trees).
    pub max_tree: usize,
    /// Longest context any token sees.
    pub max_context: usize,
    /// Rows (flattened token indices) that want logits, in plan order.
    pub logit_rows: Vec<u32>,
    /// `[S + 1]`: `logit_rows[row_start[s]..row_start[s + 1]]` belong to sequence `s`.
    pub row_start: Vec<usize>,
}

impl FlatPlan {
    /// Attention blocks of the step when a block takes up to `per_block` consecutive chain
    /// tokens of a sequence and a tree token goes alone (the tensor-core kernel's blocks a split).
    pub fn attn_blocks(&self, per_block: usize) -> usize {
        let per_block = per_block.max(1);
        (0..self.seq_is_tree.len())
            .map(|s| {
                let n = (self.seq_tok_start[s + 1] - self.seq_tok_start[s]) as usize;
                if self.seq_is_tree[s] != 0 { n } else { n.div_ceil(per_block) }
            })
            .sum()
    }

    /// Validates `plan` against the cache geometry and vocabulary, then flattens it.
    ///
    /// # Errors
    /// Blocks or slots the cache does not have, out-of-vocabulary ids, malformed trees —
    /// the same plans the CPU backend rejects.
    pub fn build(plan: &StepPlan, num_blocks: usize, block_size: usize, vocab: usize) -> Result<Self> {
        let bad = |detail: String| EngineError::Backend(format!("invalid step plan: {detail}"));
        let mut f = FlatPlan { max_blocks: 1, ..Default::default() };
        f.max_blocks = plan.seqs.iter().map(|s| s.block_table.len()).max().unwrap_or(1).max(1);
        f.seq_tok_start.push(0);
        f.row_start.push(0);
        for (s, seq) in plan.seqs.iter().enumerate() {
            let n = seq.tokens.len();
            let end = seq.start_pos + n;
            if seq.block_table.len() * block_size < end {
                return Err(bad(format!("sequence {s}: {} blocks cannot hold {end} slots", seq.block_table.len())));
            }
            if let Some(&b) = seq.block_table.iter().find(|&&b| b as usize >= num_blocks) {
                return Err(bad(format!("sequence {s}: block {b} >= {num_blocks}")));
            }
            if let Some((i, &t)) = seq.tokens.iter().enumerate().find(|(_, &t)| t as usize >= vocab) {
                return Err(EngineError::OutOfVocab { id: t, index: i, vocab });
            }
            if u32::try_from(end).is_err() || u32::try_from(num_blocks * block_size).is_err() {
                return Err(bad(format!("sequence {s}: {end} positions overflow the kernels' u32 indices")));
            }
            let base = f.tokens.len();
            match &seq.tree_parents {
                Some(parents) => {
                    if parents.len() != n || parents.iter().enumerate().any(|(i, &p)| p >= i as i32 || p < -1) {
                        return Err(bad(format!("sequence {s}: tree parents must satisfy -1 <= parent[i] < i")));
                    }
                    f.parents.extend_from_slice(parents);
                    f.max_tree = f.max_tree.max(n);
                    f.seq_is_tree.push(1);
                }
                None => {
                    f.parents.extend((0..n as i32).map(|i| i - 1));
                    f.seq_is_tree.push(0);
                }
            }
            for (i, pos) in seq.positions().into_iter().enumerate() {
                let p = seq.start_pos + i;
                f.tokens.push(seq.tokens[i]);
                f.positions.push(pos as i32);
                f.slots.push(seq.block_table[p / block_size] * block_size as u32 + (p % block_size) as u32);
                f.tok_seq.push(s as u32);
            }
            f.max_context = f.max_context.max(end);
            f.seq_start_pos.push(seq.start_pos as u32);
            f.block_tables.extend_from_slice(&seq.block_table);
            f.block_tables.extend(std::iter::repeat_n(0, f.max_blocks - seq.block_table.len()));
            f.seq_tok_start.push(f.tokens.len() as u32);
            match seq.logits {
                LogitsWanted::All => f.logit_rows.extend((base..base + n).map(|r| r as u32)),
                LogitsWanted::Last if n > 0 => f.logit_rows.push((base + n - 1) as u32),
                _ => {}
            }
            f.row_start.push(f.logit_rows.len());
        }
        Ok(f)
    }

    /// Whether this is a decode step: every sequence feeds one token as a chain and wants its
    /// logits row. Such steps differ only in data the kernels read from buffers, so one CUDA
    /// graph per shape replays them all (`graphs.rs`).
    pub fn is_decode(&self) -> bool {
        let seqs = self.seq_start_pos.len();
        seqs > 0
            && self.tokens.len() == seqs
            && self.seq_is_tree.iter().all(|&t| t == 0)
            && self.logit_rows.iter().copied().eq(0..seqs as u32)
    }

    /// Pads every block table to `stride` columns (with block 0, never read). Steps whose
    /// longest table differs then share buffer shapes; `stride < max_blocks` is refused.
    ///
    /// # Errors
    /// `stride` is smaller than the longest table.
    pub fn pad_tables(&mut self, stride: usize) -> Result<()> {
        if stride < self.max_blocks {
            return Err(EngineError::Backend(format!("pad_tables: stride {stride} < {} blocks", self.max_blocks)));
        }
        let old = self.max_blocks;
        let mut padded = Vec::with_capacity(self.seq_start_pos.len() * stride);
        for row in self.block_tables.chunks_exact(old) {
            padded.extend_from_slice(row);
            padded.extend(std::iter::repeat_n(0, stride - old));
        }
        self.block_tables = padded;
        self.max_blocks = stride;
        Ok(())
    }

    /// The cache positions flattened token `t` attends to, in the order the attention kernel
    /// visits them: the committed prefix, then (chain) new tokens `0..=i` or (tree) the
    /// ancestors of `i`, itself first.
    pub fn visible_positions(&self, t: usize) -> Vec<u32> {
        let s = self.tok_seq[t] as usize;
        let tok0 = self.seq_tok_start[s] as usize;
        let i = t - tok0;
        let start = self.seq_start_pos[s];
        let mut v: Vec<u32> = (0..start).collect();
        if self.seq_is_tree[s] != 0 {
            let mut k = i as i32;
            while k >= 0 {
                v.push(start + k as u32);
                k = self.parents[tok0 + k as usize];
            }
        } else {
            v.extend((0..=i as u32).map(|j| start + j));
        }
        v
    }
}

/// Block-table stride of a decode graph: the next power of two from 8, so a graph is recaptured
/// only when the longest sequence crosses one of a handful of lengths.
pub fn graph_stride(max_blocks: usize) -> usize {
    max_blocks.next_power_of_two().max(8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::SeqStep;

    fn seq(tokens: Vec<u32>, start_pos: usize, blocks: Vec<u32>, tree: Option<Vec<i32>>, logits: LogitsWanted) -> SeqStep {
        SeqStep { tokens, start_pos, block_table: blocks, tree_parents: tree, logits }
    }

    fn mixed_plan() -> StepPlan {
        StepPlan {
            seqs: vec![
                seq(vec![5], 17, vec![3, 0, 7], None, LogitsWanted::Last), // decode
                seq(vec![1, 2, 3, 4], 6, vec![1, 2], None, LogitsWanted::All), // chain verify
                seq(vec![9, 8, 7, 6, 5, 4], 3, vec![4, 5], Some(vec![-1, 0, 0, 1, 2, -1]), LogitsWanted::All),
                seq(vec![10; 7], 0, vec![6], None, LogitsWanted::None), // prefill chunk
            ],
        }
    }

    #[test]
    fn positions_slots_and_rows_follow_the_plan() {
        let plan = mixed_plan();
        let f = FlatPlan::build(&plan, 8, 8, 100).unwrap();
        assert_eq!(f.tokens.len(), plan.num_tokens());
        let want_pos: Vec<i32> = plan.seqs.iter().flat_map(|s| s.positions()).map(|p| p as i32).collect();
        assert_eq!(f.positions, want_pos);
        // Decode token at position 17: block_table[2] = 7, offset 1.
        assert_eq!(f.slots[0], 7 * 8 + 1);
        // Tree: node 5 has depth 0, node 3 depth 2; slots are consecutive regardless.
        assert_eq!(&f.positions[5..11], &[3, 4, 4, 5, 5, 3]);
        assert_eq!(&f.slots[5..11], &[35, 36, 37, 38, 39, 40]);
        assert_eq!(f.row_start, vec![0, 1, 5, 11, 11]);
        assert_eq!(f.logit_rows[..2], [0, 1]);
        assert_eq!(f.max_tree, 6);
        assert_eq!(f.max_blocks, 3);
        assert_eq!(f.block_tables.len(), 4 * 3);
        assert_eq!(f.max_context, 18);
    }

    #[test]
    fn kernel_visibility_walk_equals_seqstep_attends() {
        let plan = mixed_plan();
        let f = FlatPlan::build(&plan, 8, 8, 100).unwrap();
        for t in 0..f.tokens.len() {
            let s = f.tok_seq[t] as usize;
            let sq = &plan.seqs[s];
            let i = t - f.seq_tok_start[s] as usize;
            let mut got = f.visible_positions(t);
            got.sort_unstable();
            let mut want: Vec<u32> = (0..sq.start_pos as u32).collect();
            want.extend((0..sq.tokens.len()).filter(|&j| sq.attends(i, j)).map(|j| (sq.start_pos + j) as u32));
            assert_eq!(got, want, "token {t}");
        }
    }

    #[test]
    fn invalid_plans_are_rejected_like_the_cpu_backend() {
        let mut p = mixed_plan();
        p.seqs[0].block_table = vec![3, 0];
        assert!(FlatPlan::build(&p, 8, 8, 100).is_err(), "17 slots in 2 blocks of 8");
        let mut p = mixed_plan();
        p.seqs[1].block_table[0] = 8;
        assert!(FlatPlan::build(&p, 8, 8, 100).is_err(), "block out of cache");
        let mut p = mixed_plan();
        p.seqs[2].tree_parents = Some(vec![-1, 1, 0, 1, 2, -1]);
        assert!(FlatPlan::build(&p, 8, 8, 100).is_err(), "parent not before child");
        let p = mixed_plan();
        assert!(matches!(FlatPlan::build(&p, 8, 8, 10), Err(EngineError::OutOfVocab { .. })));
    }

    #[test]
    fn decode_steps_are_recognised_and_their_tables_pad_to_a_stride() {
        let decode = StepPlan {
            seqs: vec![
                seq(vec![5], 17, vec![3, 0, 7], None, LogitsWanted::Last),
                seq(vec![9], 4, vec![1], None, LogitsWanted::Last),
            ],
        };
        let mut f = FlatPlan::build(&decode, 8, 8, 32).unwrap();
        assert!(f.is_decode());
        assert_eq!((f.max_blocks, f.block_tables.clone()), (3, vec![3, 0, 7, 1, 0, 0]));
        assert!(f.pad_tables(2).is_err(), "a stride below the longest table");
        f.pad_tables(graph_stride(f.max_blocks)).unwrap();
        assert_eq!(f.max_blocks, 8);
        assert_eq!(f.block_tables, vec![3, 0, 7, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
        // Padding changes no slot, position or visible position.
        let unpadded = FlatPlan::build(&decode, 8, 8, 32).unwrap();
        assert_eq!((&f.slots, &f.positions), (&unpadded.slots, &unpadded.positions));
        for t in 0..2 {
            assert_eq!(f.visible_positions(t), unpadded.visible_positions(t));
        }
        assert_eq!(f.visible_positions(1), (0..5).collect::<Vec<u32>>());
        // Not decode: several tokens, a tree, a missing row, no sequences.
        assert!(!FlatPlan::build(&mixed_plan(), 8, 8, 32).unwrap().is_decode());
        let no_row = StepPlan { seqs: vec![seq(vec![5], 3, vec![1], None, LogitsWanted::None)] };
        assert!(!FlatPlan::build(&no_row, 8, 8, 32).unwrap().is_decode());
        let tree = StepPlan { seqs: vec![seq(vec![5], 3, vec![1], Some(vec![-1]), LogitsWanted::Last)] };
        assert!(!FlatPlan::build(&tree, 8, 8, 32).unwrap().is_decode());
        assert!(!FlatPlan::build(&StepPlan::default(), 8, 8, 32).unwrap().is_decode());
        assert_eq!((graph_stride(1), graph_stride(8), graph_stride(9), graph_stride(100)), (8, 8, 16, 128));
    }
}
