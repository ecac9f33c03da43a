//! The prefill lane's admission and the KV-cache policy: a waiting request starts prefilling
//! only when its prompt and first token fit in the free blocks; a step that needs more blocks
//! than are free preempts the newest requests by recompute (vLLM's preemption mode), and a
//! request that cannot fit even alone is aborted with an error.
use std::time::Duration;

use vpd_sched::RequestState;

use super::{internal, remove_from, Event, Req, Runtime, Work};
use crate::backend::Backend;
use crate::error::Result;

impl<B: Backend> Runtime<'_, '_, B> {
    pub(super) fn waiting_tokens(&self) -> usize {
        self.waiting
            .iter()
            .map(|&id| {
                self.reqs[id]
                    .prefill_target
                    .max(self.reqs[id].context.len())
                    .saturating_sub(self.reqs[id].cached)
            })
            .sum()
    }

    pub(super) fn prefill_age(&self) -> Duration {
        let sent = self
            .waiting
            .front()
            .map_or(0.0, |&id| self.reqs[id].record.send_s);
        Duration::from_secs_f64((self.now_s() - sent).max(0.0))
    }

    /// Tokens a waiting request must prefill when admitted now.
    pub(super) fn prefill_tokens(r: &Req) -> usize {
        if r.out_len() == 0 {
            r.prompt_len
        } else {
            r.context.len() - 1
        }
    }

    /// Whether request `id` (waiting) may start prefilling, given `reserved` blocks already
    /// promised in this step.
    pub(super) fn admissible(&self, id: usize, reserved: usize) -> bool {
        let blocks = self.engine.blocks();
        // Room for the prompt and the first generated token.
        let need = (Self::prefill_tokens(&self.reqs[id]) + 1).div_ceil(blocks.block_size());
        self.running < self.cfg.max_running && need + reserved <= blocks.num_free()
    }

    pub(super) fn prefill_ready(&self) -> bool {
        let first_waiting = self
            .waiting
            .iter()
            .find(|&&id| self.reqs[id].state == RequestState::Waiting);
        self.waiting
            .iter()
            .any(|&id| self.reqs[id].state == RequestState::Prefilling)
            || first_waiting.is_some_and(|&id| self.admissible(id, 0))
    }

    /// Prefill chunks for this step, under the token budget, admitting waiting requests in
    /// order while their prompts fit.
    pub(super) fn plan_prefill(&mut self) -> Result<Vec<(usize, Work)>> {
        self.plan_prefill_within(self.cfg.prefill_budget)
    }

    /// [`Self::plan_prefill`] with at most `budget` prompt tokens.
    pub(super) fn plan_prefill_within(&mut self, budget: usize) -> Result<Vec<(usize, Work)>> {
        let (mut budget, mut reserved, mut blocked) = (budget.min(self.cfg.prefill_budget), 0usize, false);
        let mut out = Vec::new();
        let bs = self.engine.blocks().block_size();
        for i in 0..self.waiting.len() {
            if budget == 0 {
                break;
            }
            let id = self.waiting[i];
            if self.reqs[id].state == RequestState::Waiting {
                if blocked || !self.admissible(id, reserved) {
                    blocked = true;
                    continue;
                }
                let seq = self.engine.new_sequence()?;
                self.drafter_begin(seq)?;
                self.left_queue(id);
                let r = &mut self.reqs[id];
                if r.out_len() == 0 {
                    self.metrics.prompt_tokens += r.prompt_len as u64;
                }
                r.to(RequestState::Prefilling)?;
                r.seq = Some(seq);
                r.cached = 0;
                r.prefill_target = Self::prefill_tokens(r);
                self.running += 1;
            }
            let r = &self.reqs[id];
            let n = (r.prefill_target - r.cached).min(budget);
            budget -= n;
            reserved += n.div_ceil(bs) + 1;
            out.push((id, Work::Prefill(n)));
        }
        Ok(out)
    }

    /// Preempts the newest requests holding blocks until `entries` fit; a request that cannot
    /// fit even alone is aborted.
    pub(super) fn make_room(&mut self, entries: &mut Vec<(usize, Work)>) -> Result<()> {
        loop {
            let blocks = self.engine.blocks();
            let mut need = 0;
            for (id, w) in entries.iter() {
                let seq = self.reqs[*id]
                    .seq
                    .ok_or_else(|| internal("work for a request without a cache"))?;
                need += blocks.blocks_needed(seq, w.tokens());
            }
            if need <= blocks.num_free() {
                return Ok(());
            }
            let victim = self.reqs.newest_holding_blocks();
            match victim {
                Some(v) if self.running > 1 => {
                    self.preempt(v)?;
                    entries.retain(|(id, _)| *id != v);
                }
                _ => {
                    let (free, total) = (blocks.num_free(), blocks.num_total());
                    for (id, _) in std::mem::take(entries) {
                        self.abort(id, format!("KV cache exhausted: the step needs {need} blocks, {free} of {total} are free"))?;
                    }
                    return Ok(());
                }
            }
        }
    }

    pub(super) fn release(&mut self, id: usize) -> Result<()> {
        self.await_chunk_of(id)?;
        if let Some(seq) = self.reqs[id].seq.take() {
            self.engine.blocks_mut().free(seq)?;
            self.drafter_end(seq)?;
            self.running -= 1;
            self.reqs[id].epoch += 1;
        }
        if let Some(c) = &mut self.controller {
            c.remove_request(id as u64);
        }
        remove_from(&self.decode_q, id);
        remove_from(&self.verify_q, id);
        self.plain_ready.retain(|&p| p != id);
        self.reqs[id].proposal = None;
        Ok(())
    }

    /// Preemption by recompute: drop the request's caches and queue it first for prefill
    /// again, keeping the tokens it already streamed.
    pub(super) fn preempt(&mut self, id: usize) -> Result<()> {
        self.release(id)?;
        let r = &mut self.reqs[id];
        let was_prefilling = r.state == RequestState::Prefilling;
        r.to(RequestState::Waiting)?;
        r.cached = 0;
        r.preemptions += 1;
        self.metrics.preemptions += 1;
        if !was_prefilling {
            self.waiting.push_front(id);
        }
        Ok(())
    }

    pub(super) fn abort(&mut self, id: usize, why: String) -> Result<()> {
        self.release(id)?;
        self.waiting.retain(|&w| w != id);
        self.left_queue(id);
        let t = self.now_s();
        let r = &self.reqs[id];
        r.emit(if r.rejected {
            Event::Rejected(why.clone())
        } else {
            Event::Failed(why.clone())
        });
        self.reqs[id].abort(t, why)?;
        self.observe_end(id, t);
        self.live -= 1;
        self.ended.push(id);
        Ok(())
    }
}
