//! One request's bookkeeping inside the runtime: its state-machine state, its tokens, its
//! cache position and what the client has seen of it; and [`Reqs`], the live
//! requests by id.
use std::collections::BTreeMap;
use std::ops::{Index, IndexMut};

use vpd_bench::metrics::{Chunk, RequestRecord};
use vpd_bench::synthetic::RequestAcceptance;
use vpd_sched::RequestState;

use super::events::{Event, EventSink, TokenLogprob};
use crate::engine::{FinishReason, GenerateRequest};
use crate::error::{EngineError, Result};
use crate::spec::Proposal;

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
    pub accept: Option<RequestAcceptance>,
    /// A draft waiting for verification (state `Verifying`).
    pub proposal: Option<Proposal>,
    pub record: RequestRecord,
    pub preemptions: u32,
    pub finish: Option<FinishReason>,
    pub error: Option<String>,
    /// Where a served request's events go (`None` in the in-process benchmark).
    pub sink: Option<EventSink>,
    /// Counted in the service's bounded waiting queue until it first starts prefilling.
    pub queued: bool,
    /// Refused at admission: the request's own fault.
    pub rejected: bool,
    /// `Some(k)`: report each token's log-probability and `k` alternatives.
    pub logprobs: Option<usize>,
    /// Log-probabilities of tokens appended but not yet streamed.
    pub pending_logprobs: Vec<TokenLogprob>,
    /// Bumped whenever the request loses its cache (end, preemption): a draft computed for
    /// an older epoch is stale.
    pub epoch: u64,
}

impl Req {
    pub fn new(
        req: GenerateRequest,
        send_s: f64,
        accept: Option<RequestAcceptance>,
        sink: Option<EventSink>,
    ) -> Self {
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
            accept,
            proposal: None,
            preemptions: 0,
            finish: None,
            error: None,
            queued: sink.is_some(),
            rejected: false,
            logprobs: None,
            pending_logprobs: Vec::new(),
            epoch: 0,
            sink,
        }
    }

    /// Sends `ev` to the client, if there is one. A closed stream is not an error here: the
    /// runtime's disconnect sweep aborts the request between steps.
    pub fn emit(&self, ev: Event) {
        if let Some(s) = &self.sink {
            let _ = s.send(ev);
        }
    }

    /// Notes the log-probability of `token` in `row`, if the request wants them.
    pub fn note_logprob(&mut self, row: &[f32], token: u32) {
        if let Some(top) = self.logprobs {
            self.pending_logprobs.push(TokenLogprob::from_row(row, token, top));
        }
    }

    /// Whether a served request's client has gone away.
    pub fn disconnected(&self) -> bool {
        self.sink.as_ref().is_some_and(EventSink::is_closed)
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

/// The runtime's requests by id. Ids grow with admission order, so the newest request holding
/// KV blocks (the preemption victim) is the last such entry. Served requests leave the map
/// when they end; the in-process benchmark keeps them for its report.
#[derive(Default)]
pub(crate) struct Reqs {
    map: BTreeMap<usize, Req>,
    next_id: usize,
}

impl Reqs {
    /// The id the next [`Self::insert`] returns.
    pub fn next_id(&self) -> usize {
        self.next_id
    }

    pub fn insert(&mut self, r: Req) -> usize {
        let id = self.next_id;
        self.next_id += 1;
        self.map.insert(id, r);
        id
    }

    pub fn get_mut(&mut self, id: usize) -> Option<&mut Req> {
        self.map.get_mut(&id)
    }

    pub fn remove(&mut self, id: usize) -> Option<Req> {
        self.map.remove(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (usize, &Req)> {
        self.map.iter().map(|(&id, r)| (id, r))
    }

    /// The newest request that holds KV blocks.
    pub fn newest_holding_blocks(&self) -> Option<usize> {
        self.map
            .iter()
            .rev()
            .find(|(_, r)| r.seq.is_some())
            .map(|(&id, _)| id)
    }

    /// All requests in id order, leaving the map empty.
    pub fn take_all(&mut self) -> Vec<Req> {
        std::mem::take(&mut self.map).into_values().collect()
    }
}

// Ids in the lane queues and plans always name live entries: indexing a missing id is a
// runtime bug, not a request problem, so it may panic like a slice index.
impl Index<usize> for Reqs {
    type Output = Req;
    fn index(&self, id: usize) -> &Req {
        &self.map[&id]
    }
}

impl IndexMut<usize> for Reqs {
    fn index_mut(&mut self, id: usize) -> &mut Req {
        self.map.get_mut(&id).expect("runtime: request id not live")
    }
}
