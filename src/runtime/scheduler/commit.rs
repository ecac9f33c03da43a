//! Committing a step's results to requests: verification outcomes (exact chain speculative
//! sampling, done where the logits are by [`crate::backend::forward_picks`], or labelled
//! synthetic acceptance), streaming new tokens to the request's sink, stop conditions, and the
//! hand-off of a request to its next lane.
use vpd_sched::RequestState;

use super::{internal, Runtime};
use crate::backend::{Backend, Picked};
use crate::engine::generate::stop_reason;
use crate::error::Result;
use crate::runtime::events::Event;
use crate::runtime::state::Req;
use crate::spec::Proposal;

impl<B: Backend> Runtime<'_, '_, B> {
    pub(super) fn apply_verify(&mut self, id: usize, p: &Proposal, picked: &Picked, rows: &[&[f32]], t: f64) -> Result<()> {
        let r = &mut self.reqs[id];
        let drafted = p.tree.len();
        let (k, next) = match (&mut r.accept, picked) {
            // Labelled synthetic outcomes: accept k drafts, then the target's own token after
            // them (row k's draw).
            (Some(acc), Picked::Drawn { tokens, .. }) => {
                let k = acc.verify(drafted);
                let next = *tokens
                    .get(k)
                    .ok_or_else(|| internal("verify step returned too few rows"))?;
                (k, next)
            }
            (None, Picked::Chain { accepted, next }) => (*accepted, *next),
            (_, other) => return Err(internal(format!("verify step: {other:?} for this request"))),
        };
        if k > drafted || !p.is_chain() {
            return Err(internal(format!("verify step: {k} of {drafted} drafts accepted, or a tree")));
        }
        let mut emitted = p.tree.tokens[..k].to_vec();
        emitted.push(next);
        // Emitted token j was decided by row j (row 0 is the newest committed token's).
        for (j, &tok) in emitted.iter().enumerate() {
            r.note_logprob_of(rows.get(j).copied(), tok)?;
        }
        r.cached += 1 + k;
        let seq = r
            .seq
            .ok_or_else(|| internal("verified a request without a cache"))?;
        let cached = r.cached;
        self.engine.blocks_mut().truncate(seq, cached)?;
        r.record.drafted += drafted as u64;
        r.record.accepted += k as u64;
        self.metrics.verifies += 1;
        self.metrics.drafted += drafted as u64;
        self.metrics.accepted += k as u64;
        for pos in self.metrics.accepted_per_pos.iter_mut().take(k) {
            *pos += 1;
        }
        if let Some(c) = &mut self.controller {
            c.observe_acceptance(id as u64, drafted.min(255) as u8, k.min(255) as u8)
                .map_err(|e| internal(e.to_string()))?;
        }
        let n = self.push_tokens(id, &emitted);
        if self.reqs[id].finish.is_none() {
            let committed = self.reqs[id].context.len();
            self.drafter_rollback(seq, committed)?;
        }
        self.settle(id, n, t)
    }

    /// Records and sends the newest `n` tokens of `id` as one chunk at `t`.
    pub(super) fn stream(&mut self, id: usize, n: usize, t: f64) {
        if n == 0 {
            return;
        }
        let r = &mut self.reqs[id];
        r.chunk(t, n);
        let mut logprobs = std::mem::take(&mut r.pending_logprobs);
        logprobs.truncate(n);
        r.emit(Event::Tokens {
            ids: r.context[r.context.len() - n..].to_vec(),
            logprobs,
        });
        self.metrics.generation_tokens += n as u64;
        let chunks = &r.record.chunks;
        match chunks.len() {
            0 => {}
            1 => self.metrics.ttft.observe(t - r.record.send_s),
            k => self.metrics.itl.observe(t - chunks[k - 2].t_s),
        }
    }

    /// Counts a request's end in the metrics.
    pub(super) fn observe_end(&mut self, id: usize, t: f64) {
        let r = &self.reqs[id];
        let m = &mut self.metrics;
        match (&r.error, r.finish) {
            (Some(_), _) => m.aborted += 1,
            (None, Some(crate::engine::FinishReason::Stop)) => m.finished_stop += 1,
            (None, _) => m.finished_length += 1,
        }
        if r.error.is_none() {
            m.e2e.observe(t - r.record.send_s);
            if let Some(tpot) = r.record.tpot_s() {
                m.tpot.observe(tpot);
            }
        }
    }

    /// Appends tokens until one ends the request; returns how many were appended.
    pub(super) fn push_tokens(&mut self, id: usize, toks: &[u32]) -> usize {
        let cfg = self.engine.backend().config();
        let r = &mut self.reqs[id];
        let mut n = 0;
        for &tok in toks {
            r.context.push(tok);
            n += 1;
            r.finish = stop_reason(cfg, &r.req, r.out_len(), tok);
            if r.finish.is_some() {
                break;
            }
        }
        n
    }

    /// After a step emitted `n` tokens for `id`: stream them, then finish the request or
    /// hand it (back) to the decode lane.
    pub(super) fn settle(&mut self, id: usize, n: usize, t: f64) -> Result<()> {
        self.stream(id, n, t);
        if let Some(reason) = self.reqs[id].finish {
            self.release(id)?;
            let r = &mut self.reqs[id];
            r.to(RequestState::Finished)?;
            r.record.end_s = Some(t);
            r.emit(Event::Finished {
                reason,
                prompt_tokens: r.prompt_len,
                output_tokens: r.out_len(),
            });
            self.observe_end(id, t);
            self.live -= 1;
            self.ended.push(id);
            return Ok(());
        }
        let r = &mut self.reqs[id];
        match r.state {
            RequestState::Drafting => {}
            RequestState::Prefilling => {
                r.to(RequestState::Drafting)?;
                if let Some(c) = &mut self.controller {
                    c.add_request(id as u64)
                        .map_err(|e| internal(e.to_string()))?;
                }
            }
            _ => r.to(RequestState::Drafting)?,
        }
        self.decode_q
            .try_push(id)
            .map_err(|_| internal("decode queue full"))
    }
}

impl Req {
    /// Notes the logprob of `token` under `row` (its logits where they came to the host), if
    /// the request asked for logprobs.
    pub(super) fn note_logprob_of(&mut self, row: Option<&[f32]>, token: u32) -> Result<()> {
        if self.logprobs.is_none() {
            return Ok(());
        }
        let logits = row.ok_or_else(|| internal("a request that wants logprobs got no logits row"))?;
        self.note_logprob(logits, token);
        Ok(())
    }
}
