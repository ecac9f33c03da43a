//! One request's bookkeeping inside the runtime: its state-machine state, its tokens, its
//! cache position, its samplers and what the client has seen of it.
use vpd_bench::metrics::{Chunk, RequestRecord};
use vpd_bench::synthetic::RequestAcceptance;
use vpd_sampling::Sampler;
use vpd_sched::RequestState;

use crate::engine::{FinishReason, GenerateRequest};
use crate::error::{EngineError, Result};
use crate::spec::Proposal;

/// Seed offset of the drafter's sampler, as in [`crate::spec::SpecEngine`].
pub(crate) const DRAFT_STREAM: u64 = 0x9E37_79B9_7F4A_7C15;

pub(crate) struct Req {
    pub req: GenerateRequest,
    pub state: RequestState,
    /// Target KV sequence while the request holds blocks.
    pub seq: Option<u64>,
    /// Prompt and output so far.
    pub context: Vec<u32>,
    pub prompt_len: usize,
    /// Tokens in the target cache: all of `context` but the newest once decoding.
    pub cached: usize,
    /// While prefilling: how many tokens the prefill puts in the cache (the prompt, or, after
    /// preemption, everything but the newest token).
    pub prefill_target: usize,
    pub verify: Sampler,
    pub draft: Sampler,
    pub accept: Option<RequestAcceptance>,
    /// A draft waiting for verification (state `Verifying`).
    pub proposal: Option<Proposal>,
    pub record: RequestRecord,
    pub preemptions: u32,
    pub finish: Option<FinishReason>,
    pub error: Option<String>,
}

impl Req {
    pub fn new(req: GenerateRequest, send_s: f64, accept: Option<RequestAcceptance>) -> Self {
        let seed = req.sampling.seed;
        Self {
            context: req.prompt_ids.clone(),
            prompt_len: req.prompt_ids.len(),
            record: RequestRecord {
                send_s,
                prompt_tokens: req.prompt_ids.len(),
                ..RequestRecord::default()
            },
            req,
            state: RequestState::Waiting,
            seq: None,
            cached: 0,
            prefill_target: 0,
            verify: Sampler::new(seed),
            draft: Sampler::new(seed ^ DRAFT_STREAM),
            accept,
            proposal: None,
            preemptions: 0,
            finish: None,
            error: None,
        }
    }

    pub fn out_len(&self) -> usize {
        self.context.len() - self.prompt_len
    }

    pub fn newest(&self) -> Result<u32> {
        self.context
            .last()
            .copied()
            .ok_or_else(|| EngineError::Backend("empty context".into()))
    }

    /// Checked state change.
    pub fn to(&mut self, next: RequestState) -> Result<()> {
        self.state = self
            .state
            .transition(next)
            .map_err(|e| EngineError::Backend(format!("runtime: {e}")))?;
        Ok(())
    }

    /// Records a streamed chunk of `n` tokens at `t_s`.
    pub fn chunk(&mut self, t_s: f64, n: usize) {
        if n > 0 {
            self.record.chunks.push(Chunk {
                t_s,
                tokens: n as u32,
            });
        }
    }

    /// Ends the request with an error, keeping what it streamed.
    pub fn abort(&mut self, t_s: f64, why: String) -> Result<()> {
        self.to(RequestState::Aborted)?;
        self.record.error = Some(why.clone());
        self.record.end_s = Some(t_s);
        self.error = Some(why);
        Ok(())
    }
}
