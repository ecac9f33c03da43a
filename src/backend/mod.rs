//! Backends run one batched model step described by a plain-data [`StepPlan`]
//! ("plan, then run", as FlashInfer and vLLM's `SchedulerOutput` do): the scheduler builds the
//! plan on the host, the backend executes it over its paged KV cache.
//!
//! One plan mixes sequences that contribute 1 token (decode), L+1 tokens (verification),
//! a token tree (tree verification) or a prompt chunk (prefill).
pub mod cpu;
pub mod pick;
#[cfg(all(feature = "cuda", vpd_kernels))]
pub mod cuda;

use vpd_formats::LlamaConfig;

use crate::error::Result;

pub use pick::{forward_picks, Pick, Picked, ProbRow, ProbRows, RowDraw, DRAFT_STREAM, TARGET_STREAM};

/// Which of a sequence's new positions need logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsWanted {
    /// Only the last new token (decode, prefill).
    Last,
    /// Every new token (verification).
    All,
    /// None (a prefill chunk that is not the prompt's last).
    None,
}

/// One sequence's share of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqStep {
    /// New tokens, in cache-slot order.
    pub tokens: Vec<u32>,
    /// Tokens of this sequence already in the cache; new token `i` goes to slot `start_pos + i`.
    pub start_pos: usize,
    /// Cache blocks covering slots `0..start_pos + tokens.len()`.
    pub block_table: Vec<u32>,
    /// `None`: a causal chain. `Some(parents)`: a token tree where `parents[i]` is the index of
    /// token `i`'s parent among the new tokens (`-1`: its parent is the committed prefix) and
    /// `parents[i] < i`. Token `i` then attends to the prefix and its own ancestors only, and
    /// its RoPE position is `start_pos + depth(i)`.
    pub tree_parents: Option<Vec<i32>>,
    pub logits: LogitsWanted,
}

impl SeqStep {
    /// RoPE position of each new token.
    pub fn positions(&self) -> Vec<usize> {
        match &self.tree_parents {
            None => (0..self.tokens.len()).map(|i| self.start_pos + i).collect(),
            Some(parents) => {
                let mut depth = vec![0usize; parents.len()];
                for (i, &p) in parents.iter().enumerate() {
                    depth[i] = if p < 0 { 0 } else { depth[p as usize] + 1 };
                }
                depth.into_iter().map(|d| self.start_pos + d).collect()
            }
        }
    }

    /// Whether new token `i` may attend to new token `j` (both indices into `tokens`).
    pub fn attends(&self, i: usize, j: usize) -> bool {
        match &self.tree_parents {
            None => j <= i,
            Some(parents) => {
                let mut k = i as i32;
                while k >= 0 {
                    if k as usize == j {
                        return true;
                    }
                    k = parents[k as usize];
                }
                false
            }
        }
    }
}

/// A whole step: every sequence that runs in this forward pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepPlan {
    pub seqs: Vec<SeqStep>,
}

impl StepPlan {
    pub fn num_tokens(&self) -> usize {
        self.seqs.iter().map(|s| s.tokens.len()).sum()
    }
}

/// Logits of one step, `[rows, vocab]`, rows grouped by sequence in plan order.
#[derive(Debug, Clone, Default)]
pub struct Logits {
    pub vocab: usize,
    pub data: Vec<f32>,
    /// `row_start[s]..row_start[s + 1]` are sequence `s`'s rows.
    pub row_start: Vec<usize>,
}

impl Logits {
    /// The logits rows of plan sequence `s`, each `vocab` long.
    pub fn seq_rows(&self, s: usize) -> impl Iterator<Item = &[f32]> {
        let (a, b) = (self.row_start[s], self.row_start[s + 1]);
        self.data[a * self.vocab..b * self.vocab].chunks_exact(self.vocab)
    }

    /// The last logits row of plan sequence `s`, if it has any.
    pub fn last_row(&self, s: usize) -> Option<&[f32]> {
        self.seq_rows(s).last()
    }
}

/// The greedy token of every logits row of one step: the largest logit, the lowest id on ties,
/// NaN counted as -inf (`vpd_sampling::argmax`). Rows grouped by sequence as in [`Logits`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Argmax {
    pub ids: Vec<u32>,
    /// `row_start[s]..row_start[s + 1]` are sequence `s`'s rows.
    pub row_start: Vec<usize>,
}

impl Argmax {
    /// From whole logits rows, on the host.
    pub fn of(logits: &Logits) -> Self {
        let ids = if logits.vocab == 0 {
            Vec::new()
        } else {
            logits.data.chunks_exact(logits.vocab).map(vpd_sampling::argmax).collect()
        };
        Self { ids, row_start: logits.row_start.clone() }
    }

    /// The greedy tokens of plan sequence `s`'s rows.
    pub fn seq_ids(&self, s: usize) -> &[u32] {
        &self.ids[self.row_start[s]..self.row_start[s + 1]]
    }
}

/// Executes plans over a paged KV cache. Implemented by the CPU reference and (behind the
/// `cuda` feature) the CUDA backend.
pub trait Backend: Send {
    fn config(&self) -> &LlamaConfig;
    /// Cache geometry: `(num_blocks, block_size)`.
    fn kv_geometry(&self) -> (usize, usize);
    /// Runs one step. Layers `0..num_layers` run, then the final norm and LM head
    /// (`num_layers < config.num_hidden_layers` is layer-skip self-speculation).
    ///
    /// # Errors
    /// A plan that references blocks or slots the cache does not have, or a backend failure.
    fn forward_layers(&mut self, plan: &StepPlan, num_layers: usize) -> Result<Logits>;
    /// Runs one step through every layer.
    fn forward(&mut self, plan: &StepPlan) -> Result<Logits> {
        let n = self.config().num_hidden_layers;
        self.forward_layers(plan, n)
    }
    /// Runs one step like [`Backend::forward_layers`] but returns only each row's greedy token.
    /// For greedy requests that want no logprobs this is all verification and sampling need;
    /// a backend whose logits live on a device overrides it to reduce the rows there and copy
    /// back 4 bytes a row instead of `4 · vocab` (a verify step at batch 32, L = 4 and a
    /// 128256-token vocabulary would otherwise copy 82 MB to the host).
    ///
    /// # Errors
    /// As [`Backend::forward_layers`].
    fn forward_argmax(&mut self, plan: &StepPlan, num_layers: usize) -> Result<Argmax> {
        Ok(Argmax::of(&self.forward_layers(plan, num_layers)?))
    }
    /// Runs one step like [`Backend::forward_layers`] and turns each sequence's rows into what
    /// its [`Pick`] asks for: draws under the request's sampling parameters (keeping the
    /// processed distributions for a drafter's q) or chain verification outcomes. A backend
    /// whose logits live on a device overrides it to do this there and copy back a few
    /// integers (`csrc/sampling.cu`); every backend gives the tokens of [`pick::pick_on_host`].
    ///
    /// # Errors
    /// As [`Backend::forward_layers`], and picks that do not match the plan's rows.
    fn forward_pick(&mut self, plan: &StepPlan, num_layers: usize, picks: &[Pick<'_>]) -> Result<Vec<Picked>> {
        pick::pick_on_host(&self.forward_layers(plan, num_layers)?, picks)
    }
    /// A second executor for another lane's thread (the prefill lane): the same weights and
    /// the same paged KV cache, its own scratch buffers and, on a GPU, its own stream. Every
    /// call on either executor returns only once its cache writes are done, and the runtime
    /// hands each sequence to one lane at a time, so the two never touch the same slots at
    /// once. `None`: this backend cannot share its cache, and the caller keeps that lane's work
    /// on its own thread.
    ///
    /// # Errors
    /// A backend failure making the executor (a stream, a library handle).
    fn fork_executor(&mut self) -> Result<Option<Box<dyn Backend>>> {
        Ok(None)
    }
    /// Runs the following steps on this executor's small SM partition (`true`: the other lanes
    /// have work it must not crowd out) or on the whole device (`false`). A no-op for a backend
    /// without partitions (the CPU; a GPU executor given none).
    ///
    /// # Errors
    /// A failure moving the executor to the other partition's stream.
    fn confine(&mut self, on: bool) -> Result<()> {
        let _ = on;
        Ok(())
    }
    /// Copies whole cache blocks `src → dst` (copy-on-write after a fork).
    fn copy_blocks(&mut self, pairs: &[(u32, u32)]) -> Result<()>;
    /// Moves cache slots of one sequence: `(from_slot, to_slot)` in order, through its block table
    /// (compacting an accepted tree path into consecutive positions).
    fn move_slots(&mut self, block_table: &[u32], moves: &[(usize, usize)]) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::{Argmax, Logits};

    #[test]
    fn argmax_rows_pick_the_first_maximum_and_count_nan_as_minus_infinity() {
        let logits = Logits {
            vocab: 4,
            data: vec![
                1.0, 3.0, 3.0, 0.0, // tie: the lower id
                f32::NAN, -1.0, f32::NAN, -2.0, // NaN is never the maximum
                f32::NAN, f32::NAN, f32::NAN, f32::NAN, // nothing finite: id 0
                -0.0, 0.0, f32::NEG_INFINITY, -5.0, // -0 and +0 tie
            ],
            row_start: vec![0, 1, 4],
        };
        let a = Argmax::of(&logits);
        assert_eq!(a.ids, vec![1, 1, 0, 0]);
        assert_eq!(a.seq_ids(0), &[1]);
        assert_eq!(a.seq_ids(1), &[1, 0, 0]);
        // The same choice as the sampler's greedy key, which the device reduction uses.
        for row in logits.data.chunks_exact(4) {
            assert_eq!(vpd_sampling::argmax(row), vpd_sampling::kernel_ref::argmax_key(row));
        }
        let empty = Logits { vocab: 0, data: Vec::new(), row_start: vec![0, 0] };
        assert_eq!(Argmax::of(&empty).seq_ids(0), &[] as &[u32]);
    }
}
