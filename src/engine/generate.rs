//! Plain autoregressive generation: chunked prefill, then batched single-token decode steps,
//! each sequence sampled with its own seeded sampler.
use std::time::Instant;

use vpd_kv::BlockManager;
use vpd_sampling::Sampler;

use super::request::{FinishReason, GenerateOutput, GenerateRequest, Timings};
use crate::backend::{Backend, LogitsWanted, SeqStep, StepPlan};
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
    sampler: Sampler,
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
            .map(|(a, r)| {
                let now = Instant::now();
                let first = a.first_token_at.unwrap_or(now);
                let ttft_ms = ms(first - a.started);
                let decode_ms = ms(now - first);
                let after_first = a.out.len().saturating_sub(1);
                Timings {
                    ttft_ms,
                    decode_ms,
                    total_ms: ms(now - a.started),
                    decode_tokens_per_s: if decode_ms > 0.0 { after_first as f64 / (decode_ms / 1e3) } else { 0.0 },
                }
                .into_output(r, a.out, a.finish.unwrap_or(FinishReason::Length))
            })
            .collect())
    }

    fn run(&mut self, reqs: &[GenerateRequest], active: &mut Vec<Active>) -> Result<()> {
        for r in reqs {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.blocks.add_sequence(seq)?;
            active.push(Active {
                seq,
                sampler: Sampler::new(r.sampling.seed),
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
            let chunks: Vec<&[u32]> = r.prompt_ids.chunks(self.prefill_chunk).collect();
            for (c, chunk) in chunks.iter().enumerate() {
                let last = c + 1 == chunks.len();
                self.blocks.append(a.seq, chunk.len())?;
                let step = self.seq_step(a.seq, chunk.to_vec(), a.cached, if last { LogitsWanted::Last } else { LogitsWanted::None });
                let logits = self.backend.forward(&StepPlan { seqs: vec![step] })?;
                a.cached += chunk.len();
                if let Some(row) = logits.last_row(0).filter(|_| last) {
                    let tok = a.sampler.sample(row, &r.sampling);
                    a.first_token_at = Some(Instant::now());
                    self.accept(a, r, tok);
                }
            }
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
                self.blocks.append(a.seq, 1)?;
                let last = *a.out.last().expect("a live sequence has sampled at least one token");
                seqs.push(self.seq_step(a.seq, vec![last], a.cached, LogitsWanted::Last));
            }
            let logits = self.backend.forward(&StepPlan { seqs })?;
            for (s, &i) in live.iter().enumerate() {
                let (a, r) = (&mut active[i], &reqs[i]);
                a.cached += 1;
                if let Some(row) = logits.last_row(s) {
                    let tok = a.sampler.sample(row, &r.sampling);
                    self.accept(a, r, tok);
                }
            }
        }
    }

    fn seq_step(&self, seq: u64, tokens: Vec<u32>, start_pos: usize, logits: LogitsWanted) -> SeqStep {
        let block_table = self.blocks.block_table(seq).map(<[u32]>::to_vec).unwrap_or_default();
        SeqStep { tokens, start_pos, block_table, tree_parents: None, logits }
    }

    /// Records a sampled token and decides whether the sequence is finished.
    fn accept(&self, a: &mut Active, r: &GenerateRequest, tok: u32) {
        let cfg = self.backend.config();
        a.out.push(tok);
        if !r.ignore_eos && cfg.eos_token_ids.contains(&tok) {
            a.finish = Some(FinishReason::Stop);
        } else if a.out.len() >= r.max_new_tokens || r.prompt_ids.len() + a.out.len() >= cfg.max_position_embeddings {
            a.finish = Some(FinishReason::Length);
        }
    }
}

impl Timings {
    fn into_output(self, r: &GenerateRequest, token_ids: Vec<u32>, finish_reason: FinishReason) -> GenerateOutput {
        GenerateOutput { prompt_ids: r.prompt_ids.clone(), token_ids, finish_reason, timings: self }
    }
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
