//! CUDA-graph replay of decode steps (issue 4, item 4). A decode step (every sequence feeds one
//! token as a chain and wants its logits row) launches five to twelve kernels a layer; replaying
//! them as one captured graph removes the launch gaps (benches/cuda/decode_step.rs, H200, run S
//! in docs/perf.md: the 1B step 1.127 → 1.036 ms, the 8B step 4.907 → 4.728 ms).
//!
//! What a graph bakes in: the buffers' addresses and every by-value kernel argument. So a
//! graph is kept per [`DecodeKey`]: sequences (= tokens = logits rows), block-table stride
//! (padded to [`plan::graph_stride`]), attention splits (chosen for the longest context that
//! stride allows) and layers. Everything that changes from step to step (ids, positions,
//! slots, context lengths, block tables) is copied into the graph's own input buffers before
//! each replay; the kernels read it from there. A workspace reallocation moves the buffers
//! the graphs write, so every graph is dropped then ([`CudaBackend::workspace`] bumps the
//! generation). The first step of a shape runs uncaptured (cuBLAS picks its kernels and
//! workspace) and is then captured for the steps after it.
#![allow(unsafe_code)]
use std::collections::HashMap;

use super::plan::{self, FlatPlan};
use super::{ops, CudaBackend, PreparedStep, StepGraph};
use crate::error::{EngineError, Result};

/// Graphs kept at most; past that the cache starts over (each holds a few small buffers).
const MAX_GRAPHS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct DecodeKey {
    seqs: usize,
    stride: usize,
    splits: usize,
    layers: usize,
}

struct Entry {
    step: PreparedStep,
    graph: StepGraph,
}

// SAFETY: an entry holds driver handles (the graph and its executable, cudarc's `CudaGraph`,
// which is `!Send` only because it stores raw pointers) and device buffers. CUDA lets any
// thread use them while their context is current; the backend that owns this cache is used by
// one thread at a time (`&mut self`; it moves onto the decode lane's thread with the drafter)
// and binds its context to the calling thread before every step (`CudaBackend::execute`).
unsafe impl Send for Entry {}

/// A backend's decode graphs, valid for one workspace generation.
#[derive(Default)]
pub(super) struct DecodeGraphs {
    entries: HashMap<DecodeKey, Entry>,
    generation: u64,
    /// Steps replayed and graphs captured (for the checks and benches).
    pub replays: u64,
    pub captures: u64,
}

impl CudaBackend {
    /// Runs a flattened decode step from its graph in `graphs`, capturing the graph on the
    /// shape's first step.
    pub(super) fn run_decode_graph(&mut self, graphs: &mut DecodeGraphs, mut flat: FlatPlan, num_layers: usize) -> Result<RanStep> {
        let stride = plan::graph_stride(flat.max_blocks);
        flat.pad_tables(stride)?;
        let seqs = flat.tokens.len();
        let splits = ops::attn_splits(seqs, self.shape, stride * self.cache.block_size, self.dev.sm_count as usize);
        let key = DecodeKey { seqs, stride, splits, layers: num_layers.min(self.config.num_hidden_layers) };
        self.workspace(seqs, seqs, splits)?;
        if graphs.generation != self.ws_generation || graphs.entries.len() >= MAX_GRAPHS {
            graphs.entries.clear();
            graphs.generation = self.ws_generation;
        }
        let row_start = flat.row_start.clone();
        if let Some(e) = graphs.entries.get_mut(&key) {
            e.step.refill(&self.dev, &flat)?;
            self.replay_step(&e.graph)?;
            graphs.replays += 1;
            return Ok(RanStep { rows: seqs, row_start, step: None });
        }
        // First step of this shape: run it, then capture it for the next ones.
        let step = self.prepare_flat(flat, key.layers, splits)?;
        self.launch_step(&step)?;
        let graph = self.capture_step(&step)?;
        graphs.captures += 1;
        graphs.entries.insert(key, Entry { step, graph });
        Ok(RanStep { rows: seqs, row_start, step: None })
    }
}

/// A step that ran: its logits rows are in the workspace.
pub(super) struct RanStep {
    pub rows: usize,
    pub row_start: Vec<usize>,
    /// The step's input buffers, when they belong to this step alone.
    pub step: Option<PreparedStep>,
}

impl PreparedStep {
    /// Copies a decode step of the same shape into this step's buffers (stream-ordered, so
    /// after the previous replay has read them).
    fn refill(&mut self, dev: &super::Device, f: &FlatPlan) -> Result<()> {
        let m = &mut self.meta;
        let same = self.ids.len() == f.tokens.len()
            && m.block_tables.len() == f.block_tables.len()
            && m.seq_tok_start.len() == f.seq_tok_start.len()
            && self.rows.len() == f.logit_rows.len();
        if !same {
            return Err(EngineError::Backend("decode graph: a step of another shape".into()));
        }
        dev.upload_into(&f.tokens, &mut self.ids)?;
        dev.upload_into(&f.positions, &mut self.positions)?;
        dev.upload_into(&f.slots, &mut self.slots)?;
        dev.upload_into(&f.tok_seq, &mut m.tok_seq)?;
        dev.upload_into(&f.seq_tok_start, &mut m.seq_tok_start)?;
        dev.upload_into(&f.seq_start_pos, &mut m.seq_start_pos)?;
        dev.upload_into(&f.seq_is_tree, &mut m.seq_is_tree)?;
        dev.upload_into(&f.parents, &mut m.parents)?;
        dev.upload_into(&f.block_tables, &mut m.block_tables)?;
        dev.upload_into(&f.logit_rows, &mut self.rows)?;
        m.max_context = f.max_context;
        Ok(())
    }
}
