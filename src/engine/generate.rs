//! Plain autoregressive generation: chunked prefill, then batched single-token decode steps.
//! A sampled token is drawn where the logits are ([`crate::backend::forward_picks`]), keyed by
//! the request's seed and counted by its position, so a request's tokens do not depend on the
//! others in its batch.
use std::time::Instant;

use vpd_kv::BlockManager;

use super::request::{FinishReason, GenerateOutput, GenerateRequest, Timings};
use crate::backend::{forward_picks, Backend, LogitsWanted, Pick, RowDraw, SeqStep, StepPlan, TARGET_STREAM};
use crate::error::Result;

/// Prompt tokens per prefill step (Sarathi-style chunking bounds a step's memory and time).
pub const DEFAULT_PREFILL_CHUNK: usize = 512;

/// A backend plus the block manager that owns its cache's block tables.
pub struct Engine<B: Backend> {
    backend: B,
    blocks: BlockManager,
    next_seq: u64,
    prefill_chunk: usize,
}

struct Active {
    seq: u64,
    /// Tokens already in the cache.
    cached: usize,
    out: Vec<u32>,
    finish: Option<FinishReason>,
    started: Instant,
    first_token_at: Option<Instant>,
}

impl<B: Backend> Engine<B> {
    /// # Errors
    /// The backend's cache geometry is unusable.
    pub fn new(backend: B) -> Result<Self> {
        let (num_blocks, block_size) = backend.kv_geometry();
        let blocks = BlockManager::new(num_blocks, block_size)?;
        Ok(Self { backend, blocks, next_seq: 0, prefill_chunk: DEFAULT_PREFILL_CHUNK })
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    pub fn blocks(&self) -> &BlockManager {
        &self.blocks
    }

    pub fn set_prefill_chunk(&mut self, tokens: usize) {
        self.prefill_chunk = tokens.max(1);
    }

    /// Generates for one request.
    ///
    /// # Errors
    /// See [`Engine::generate_batch`].
    pub fn generate(&mut self, req: &GenerateRequest) -> Result<GenerateOutput> {
        let mut out = self.generate_batch(std::slice::from_ref(req))?;
        Ok(out.remove(0))
    }

    /// Generates for several requests, decoding them together in batched steps.
    /// Every sequence's cache blocks are released before returning, on success or error.
    ///
    /// # Errors
    /// An invalid request (checked before any work), a cache too small for the batch,
    /// or a backend failure.
    pub fn generate_batch(&mut self, reqs: &[GenerateRequest]) -> Result<Vec<GenerateOutput>> {
        let cfg = self.backend.config();
        let (vocab, context) = (cfg.vocab_size, cfg.max_position_embeddings);
        for r in reqs {
            r.validate(vocab, context)?;
        }
        let mut active: Vec<Active> = Vec::with_capacity(reqs.len());
        let result = self.run(reqs, &mut active);
        for a in &active {
            // The sequence was registered by `run`; freeing cannot fail for a known id.
            let _ = self.blocks.free(a.seq);
        }
        result?;
        Ok(active
            .into_iter()
            .zip(reqs)
            .map(|(a, r)| GenerateOutput {
                prompt_ids: r.prompt_ids.clone(),
                timings: Timings::from_marks(a.started, a.first_token_at, a.out.len()),
                token_ids: a.out,
                finish_reason: a.finish.unwrap_or(FinishReason::Length),
                spec: None,
            })
            .collect())
    }

    fn run(&mut self, reqs: &[GenerateRequest], active: &mut Vec<Active>) -> Result<()> {
        for r in reqs {
            let seq = self.new_sequence()?;
            active.push(Active {
                seq,
                cached: 0,
                out: Vec::new(),
                finish: (r.max_new_tokens == 0).then_some(FinishReason::Length),
                started: Instant::now(),
                first_token_at: None,
            });
        }
        // Prefill, one request at a time, in chunks.
        for (a, r) in active.iter_mut().zip(reqs) {
            if a.finish.is_some() {
                continue;
            }
            a.started = Instant::now();
            let draw = RowDraw { sampling: r.sampling, counter: r.prompt_ids.len() as u64, stream: TARGET_STREAM };
            let tok = self.prefill(a.seq, &r.prompt_ids, draw)?;
            a.cached = r.prompt_ids.len();
            a.first_token_at = Some(Instant::now());
            a.out.push(tok);
            a.finish = stop_reason(self.backend.config(), r, a.out.len(), tok);
        }
        // Batched decode: every unfinished sequence feeds its last token.
        loop {
            let live: Vec<usize> = (0..active.len()).filter(|&i| active[i].finish.is_none()).collect();
            if live.is_empty() {
                return Ok(());
            }
            let mut seqs = Vec::with_capacity(live.len());
            for &i in &live {
                let a = &active[i];
                self.append(a.seq, 1)?;
                let last = *a.out.last().expect("a live sequence has sampled at least one token");
                seqs.push(self.seq_step(a.seq, vec![last], a.cached, LogitsWanted::Last));
            }
            // Each new token sits at position `cached + 1` of its sequence.
            let picks: Vec<Pick<'_>> = live
                .iter()
                .map(|&i| Pick::Draw {
                    draw: RowDraw { sampling: reqs[i].sampling, counter: active[i].cached as u64 + 1, stream: TARGET_STREAM },
                    keep: false,
                })
                .collect();
            let layers = self.backend.config().num_hidden_layers;
            let (picked, _) = forward_picks(&mut self.backend, &StepPlan { seqs }, layers, &picks, false)?;
            for (&i, p) in live.iter().zip(&picked) {
                let (a, r) = (&mut active[i], &reqs[i]);
                a.cached += 1;
                if let Some(&tok) = p.drawn()?.last() {
                    a.out.push(tok);
                    a.finish = stop_reason(self.backend.config(), r, a.out.len(), tok);
                }
            }
        }
    }

    /// Registers a new sequence in the block manager and returns its id.
    pub(crate) fn new_sequence(&mut self) -> Result<u64> {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.blocks.add_sequence(seq)?;
        Ok(seq)
    }

    pub(crate) fn blocks_mut(&mut self) -> &mut BlockManager {
        &mut self.blocks
    }

    /// Prefills `prompt` into `seq`'s (empty) cache in chunks; returns the first output token,
    /// drawn from the prompt's last row under `draw` where the logits are.
    ///
    /// # Errors
    /// An empty prompt, or a backend failure.
    pub(crate) fn prefill(&mut self, seq: u64, prompt: &[u32], draw: RowDraw) -> Result<u32> {
        let layers = self.backend.config().num_hidden_layers;
        let mut first = None;
        let mut done = 0;
        for chunk in prompt.chunks(self.prefill_chunk) {
            let is_last = done + chunk.len() == prompt.len();
            self.append(seq, chunk.len())?;
            let (wanted, pick) = if is_last { (LogitsWanted::Last, Pick::Draw { draw, keep: false }) } else { (LogitsWanted::None, Pick::Skip) };
            let step = self.seq_step(seq, chunk.to_vec(), done, wanted);
            let (picked, _) = forward_picks(&mut self.backend, &StepPlan { seqs: vec![step] }, layers, &[pick], false)?;
            done += chunk.len();
            if is_last {
                first = picked[0].drawn()?.last().copied();
            }
        }
        first.ok_or_else(|| crate::error::EngineError::Backend("prefill of an empty prompt".into()))
    }

    /// Reserves cache slots for `n` more tokens, performing any copy-on-write block copies.
    pub(crate) fn append(&mut self, seq: u64, n: usize) -> Result<()> {
        let copies = self.blocks.append(seq, n)?;
        if !copies.is_empty() {
            let pairs: Vec<(u32, u32)> = copies.iter().map(|c| (c.src, c.dst)).collect();
            self.backend.copy_blocks(&pairs)?;
        }
        Ok(())
    }

    pub(crate) fn seq_step(&self, seq: u64, tokens: Vec<u32>, start_pos: usize, logits: LogitsWanted) -> SeqStep {
        let block_table = self.blocks.block_table(seq).map(<[u32]>::to_vec).unwrap_or_default();
        SeqStep { tokens, start_pos, block_table, tree_parents: None, logits }
    }

}

/// Why a sequence that just produced its `out_len`-th token `tok` stops, if it does.
pub(crate) fn stop_reason(cfg: &vpd_formats::LlamaConfig, r: &GenerateRequest, out_len: usize, tok: u32) -> Option<FinishReason> {
    if !r.ignore_eos && cfg.eos_token_ids.contains(&tok) {
        Some(FinishReason::Stop)
    } else if out_len >= r.max_new_tokens || r.prompt_ids.len() + out_len >= cfg.max_position_embeddings {
        Some(FinishReason::Length)
    } else {
        None
    }
}

