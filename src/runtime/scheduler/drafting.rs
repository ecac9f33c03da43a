//! The decode lane's drafting, seen from the serving thread: the controller's choice of L,
//! each request's draft budget, and the draft itself, inline (single-lane) or on the decode
//! lane's own thread (three-lane policies; see [`super::draft_lane`]).
use std::collections::HashMap;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use vpd_bench::metrics::ControllerSummary;
use vpd_sched::{Controller, LaneLoad, RequestState};

use super::draft_lane::{DraftJob, DraftMsg, LaneEvent};
use super::{internal, Runtime, Work};
use crate::backend::Backend;
use crate::error::Result;
use crate::spec::{DraftQuery, DraftStep, Proposal};

/// Prefill tokens that will share the next verify forward, the controller's `B` beside the
/// queued verify groups. The controller only runs under the three-lane policies, where a chunk
/// is a forward of its own (on the serving thread, or on the prefill lane's thread and
/// executor) unless `--prefill-ride` lets chunks ride in the verify forwards. A chunk of its
/// own does not change what one more drafted token costs in the verify forward, so it is not
/// charged: charging it (up to the whole chunk budget, the rule before 2026-12-03) pushed the
/// verify forward past the compute ridge in the cost model and drafts down to L = 1 whenever
/// long prompts waited. The chunk's device time still counts in the busy meter, since it does
/// slow concurrent drafts.
pub(super) fn prefill_tokens_in_verify(waiting_tokens: usize, prefill_ride: usize) -> usize {
    waiting_tokens.min(prefill_ride)
}

/// Running sums of what the controller was shown, for [`ControllerSummary`].
#[derive(Debug, Default)]
pub(super) struct ControllerTally {
    requests: f64,
    busy: f64,
    background: f64,
    draft_steps_timed: u64,
    draft_steps_catching_up: u64,
}

impl ControllerTally {
    /// Called once before each decision, so the controller's step count divides the sums.
    fn note_load(&mut self, load: &LaneLoad, requests: usize) {
        self.requests += requests as f64;
        self.busy += if load.verify_busy.is_finite() { load.verify_busy } else { 0.0 };
        self.background += f64::from(load.verify_queue_tokens) + f64::from(load.prefill_chunk_tokens);
    }

    /// The summary of a run: these sums with the controller's counters and fitted costs.
    pub(super) fn summary(&self, c: &Controller) -> ControllerSummary {
        let stats = c.stats();
        let mean = |sum: f64| if stats.steps > 0 { sum / stats.steps as f64 } else { 0.0 };
        let cost = c.cost_model();
        let verify = cost.verify_fit();
        ControllerSummary {
            decisions: stats.steps,
            l_changes: stats.l_changes,
            probes: stats.probes,
            refreshes: stats.refreshes,
            mean_requests: mean(self.requests),
            mean_verify_busy: mean(self.busy),
            mean_background_tokens: mean(self.background),
            draft_step_ms: [1, 16, 64, 128].map(|b| (b, 1e3 * cost.draft_step_s(b))).to_vec(),
            verify_base_ms: 1e3 * verify.base_s,
            verify_per_token_us: 1e6 * verify.per_token_s,
            verify_above_ridge_us: 1e6 * verify.per_token_above_ridge_s,
            ridge_tokens: verify.ridge_tokens,
            verify_per_seq_us: 1e6 * verify.per_seq_s,
            draft_steps_timed: self.draft_steps_timed,
            draft_steps_catching_up: self.draft_steps_catching_up,
            predicted_goodput: stats.predicted_goodput,
        }
    }
}

/// The `(batch, seconds)` samples of one draft step that a propose call gives the cost model,
/// and how many of its forwards were left out. With the drafter's own timing, each steady
/// forward is one sample and one that carried a catch-up prefill is left out
/// ([`DraftStep::is_steady`]): charged as a step, a catch-up would make drafting look dearer
/// the less a request drafts, and less drafting means bigger catch-ups. Without timing (a
/// drafter that runs no forwards), the call's `secs` over its `steps` sequential steps.
pub(super) fn draft_step_samples(batch: usize, secs: f64, steps: usize, timed: &[DraftStep]) -> (Vec<(usize, f64)>, u64) {
    if timed.is_empty() {
        let samples = if steps > 0 { vec![(batch, secs / steps as f64)] } else { Vec::new() };
        return (samples, 0);
    }
    let samples: Vec<(usize, f64)> = timed.iter().filter(|s| s.is_steady()).map(|s| (s.seqs, s.secs)).collect();
    let left_out = (timed.len() - samples.len()) as u64;
    (samples, left_out)
}

impl<B: Backend> Runtime<'_, '_, B> {
    /// Drafts for `ids` (all in state Drafting). Returns the work for one target step:
    /// `Verify` for each non-empty draft and `Decode` for each request without one. With
    /// `hand_off`, drafted requests go to the verify queue instead and only plain work returns.
    pub(super) fn draft_round(&mut self, ids: &[usize], hand_off: bool) -> Result<Vec<(usize, Work)>> {
        let load = LaneLoad {
            verify_queue_tokens: self.verify_q.len() as u32 * (self.cfg.num_draft as u32 + 1),
            prefill_chunk_tokens: prefill_tokens_in_verify(self.waiting_tokens(), self.cfg.prefill_ride) as u32,
            verify_busy: self.target_busy.fraction(self.now_s()),
        };
        if let Some(c) = &self.controller {
            self.tally.note_load(&load, c.len());
        }
        let want: HashMap<usize, usize> = match &mut self.controller {
            Some(c) => c
                .decide(&load)
                .iter()
                .map(|d| (d.id as usize, d.l as usize))
                .collect(),
            None => HashMap::new(),
        };
        let lens: Vec<usize> = ids
            .iter()
            .map(|&id| self.draft_budget(id, want.get(&id).copied().unwrap_or(self.cfg.num_draft)))
            .collect();
        let drafting: Vec<usize> = ids
            .iter()
            .zip(&lens)
            .filter(|(_, &l)| l > 0)
            .map(|(&id, _)| id)
            .collect();
        let dlens: Vec<usize> = lens.iter().copied().filter(|&l| l > 0).collect();
        if hand_off && self.lane.is_some() {
            // The decode lane's thread drafts; the results come back through `collect_drafts`.
            self.dispatch(&drafting, &dlens)?;
            let mut plain = Vec::new();
            for (&id, &l) in ids.iter().zip(&lens) {
                if l == 0 {
                    self.metrics.l_histogram[0] += 1;
                    plain.push((id, Work::Decode));
                }
            }
            return Ok(plain);
        }
        let mut proposals: HashMap<usize, Proposal> = self
            .draft(&drafting, &dlens)?
            .into_iter()
            .zip(&drafting)
            .map(|(p, &id)| (id, p))
            .collect();
        let mut out = Vec::new();
        for &id in ids {
            match proposals.remove(&id).filter(|p| !p.tree.is_empty()) {
                Some(p) => {
                    self.metrics.l_histogram[p.tree.len().min(self.cfg.num_draft)] += 1;
                    if hand_off {
                        let r = &mut self.reqs[id];
                        r.to(RequestState::Verifying)?;
                        r.proposal = Some(p);
                        self.verify_q
                            .try_push(id)
                            .map_err(|_| internal("verify queue full"))?;
                    } else {
                        out.push((id, Work::Verify(p)));
                    }
                }
                None => {
                    self.metrics.l_histogram[0] += 1;
                    out.push((id, Work::Decode));
                }
            }
        }
        if hand_off && !drafting.is_empty() {
            self.out.lane_steps[0] += 1;
        }
        Ok(out)
    }

    /// How many tokens request `id` may draft: never more than it may still emit minus the
    /// one verification always adds, nor past the context.
    fn draft_budget(&self, id: usize, want: usize) -> usize {
        let r = &self.reqs[id];
        let ctx_room = self
            .engine
            .backend()
            .config()
            .max_position_embeddings
            .saturating_sub(r.context.len());
        let out_room = r
            .req
            .max_new_tokens
            .saturating_sub(r.out_len())
            .saturating_sub(1);
        want.min(ctx_room).min(out_room)
    }

    /// Drafts inline, on the serving thread.
    fn draft(&mut self, ids: &[usize], lens: &[usize]) -> Result<Vec<Proposal>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let drafter = self
            .drafter
            .as_deref_mut()
            .ok_or_else(|| internal("drafting without a drafter"))?;
        let mut queries = Vec::with_capacity(ids.len());
        for (&id, &len) in ids.iter().zip(lens) {
            let r = &self.reqs[id];
            let seq = r
                .seq
                .ok_or_else(|| internal("drafting for a request without a cache"))?;
            queries.push(DraftQuery {
                seq,
                context: &r.context,
                len,
                sampling: &r.req.sampling,
            });
        }
        let t0 = Instant::now();
        let result = drafter.propose(&queries);
        let dt = t0.elapsed().as_secs_f64();
        self.out.loop_time.draft_in_thread_s += dt;
        let steps = lens.iter().copied().max().unwrap_or(0);
        let samples = draft_step_samples(ids.len(), dt, steps, drafter.last_steps());
        self.observe_drafting(samples);
        result
    }

    /// Tells the controller what a draft step costs, measured under the target's current load
    /// (the controller stores it as a solo time): the samples of [`draft_step_samples`].
    fn observe_drafting(&mut self, (samples, catching_up): (Vec<(usize, f64)>, u64)) {
        let busy = self.target_busy.fraction(self.now_s());
        let Some(c) = &mut self.controller else { return };
        for &(seqs, step_s) in &samples {
            c.observe_loaded_draft_step(seqs, step_s, busy);
        }
        self.tally.draft_steps_timed += samples.len() as u64;
        self.tally.draft_steps_catching_up += catching_up;
    }

    /// Sends draft jobs for `ids` to the decode lane's thread.
    fn dispatch(&mut self, ids: &[usize], lens: &[usize]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut jobs = Vec::with_capacity(ids.len());
        for (&id, &len) in ids.iter().zip(lens) {
            let r = &mut self.reqs[id];
            let seq = r
                .seq
                .ok_or_else(|| internal("drafting for a request without a cache"))?;
            jobs.push(DraftJob {
                id,
                epoch: r.epoch,
                seq,
                context: r.context.clone(),
                len,
                sampling: r.req.sampling,
            });
        }
        let n = jobs.len();
        if !self.cfg.overlap_groups && self.drafts_in_flight > 0 {
            // Gathering (the default) sends one batch per round: a second batch while one is
            // out would split the requests into groups again.
            return Err(internal("a draft batch sent while another is out, with gathering on"));
        }
        self.send_lane(DraftMsg::Propose(jobs))?;
        self.drafts_in_flight += n;
        Ok(())
    }

    fn send_lane(&self, msg: DraftMsg) -> Result<()> {
        let lane = self
            .lane
            .as_ref()
            .ok_or_else(|| internal("no decode lane thread"))?;
        lane.tx
            .send(msg)
            .map_err(|_| internal("the decode lane's thread has stopped"))
    }

    /// Takes the decode lane's finished drafts (waiting up to `wait` for the first): drafted
    /// requests go to the verify queue, requests without a draft to a plain decode step.
    /// Returns whether any arrived.
    pub(super) fn collect_drafts(&mut self, wait: Option<Duration>) -> Result<bool> {
        let Some(lane) = &self.lane else {
            return Ok(false);
        };
        let mut events = Vec::new();
        if let Some(w) = wait {
            match lane.rx.recv_timeout(w) {
                Ok(ev) => events.push(ev),
                Err(RecvTimeoutError::Timeout) => return Ok(false),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(internal("the decode lane's thread has stopped"))
                }
            }
        }
        events.extend(lane.rx.try_iter());
        let any = !events.is_empty();
        for ev in events {
            let done = match ev {
                LaneEvent::Fault(why) => return Err(internal(why)),
                LaneEvent::Drafted(d) => d,
            };
            self.drafts_in_flight -= done.jobs.len();
            if done.steps > 0 {
                self.out.lane_steps[0] += 1;
                self.out.loop_time.draft_on_lane_s += done.secs;
                self.observe_drafting(draft_step_samples(done.jobs.len(), done.secs, done.steps, &done.step_times));
            }
            let proposals = done.result?;
            for ((id, epoch), p) in done.jobs.into_iter().zip(proposals) {
                // The request may have ended, or lost its cache, while its draft was out.
                let Some(r) = self.reqs.get_mut(id) else {
                    continue;
                };
                if r.epoch != epoch || r.state != RequestState::Drafting {
                    continue;
                }
                if p.tree.is_empty() {
                    self.metrics.l_histogram[0] += 1;
                    self.plain_ready.push(id);
                } else {
                    self.metrics.l_histogram[p.tree.len().min(self.cfg.num_draft)] += 1;
                    r.to(RequestState::Verifying)?;
                    r.proposal = Some(p);
                    self.verify_q
                        .try_push(id)
                        .map_err(|_| internal("verify queue full"))?;
                }
            }
        }
        Ok(any)
    }

    /// The drafter's bookkeeping, inline or through the decode lane's queue (in order with
    /// the drafts, so a rollback always lands before the next draft of that sequence).
    pub(super) fn drafter_begin(&mut self, seq: u64) -> Result<()> {
        if self.lane.is_some() {
            return self.send_lane(DraftMsg::Begin(seq));
        }
        match self.drafter.as_deref_mut() {
            Some(d) => d.begin(seq),
            None => Ok(()),
        }
    }

    pub(super) fn drafter_rollback(&mut self, seq: u64, committed: usize) -> Result<()> {
        if self.lane.is_some() {
            return self.send_lane(DraftMsg::Rollback { seq, committed });
        }
        match self.drafter.as_deref_mut() {
            Some(d) => d.rollback(seq, committed),
            None => Ok(()),
        }
    }

    pub(super) fn drafter_end(&mut self, seq: u64) -> Result<()> {
        if self.lane.is_some() {
            return self.send_lane(DraftMsg::End(seq));
        }
        if let Some(d) = self.drafter.as_deref_mut() {
            d.end(seq);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{draft_step_samples, prefill_tokens_in_verify};
    use crate::spec::DraftStep;

    #[test]
    fn catch_up_forwards_do_not_feed_the_draft_step_cost() {
        // A propose of L = 3 for 8 sequences whose first forward caught up 300 prompt tokens.
        let step = |tokens, secs| DraftStep { seqs: 8, tokens, secs };
        let timed = [step(300, 0.050), step(8, 0.002), step(8, 0.002)];
        let (samples, left_out) = draft_step_samples(8, 0.054, 3, &timed);
        assert_eq!(samples, vec![(8, 0.002), (8, 0.002)]);
        assert_eq!(left_out, 1);
        // The steady first step catches up two tokens a sequence at most (newest + bonus).
        let (samples, left_out) = draft_step_samples(8, 0.004, 1, &[step(16, 0.004)]);
        assert_eq!((samples, left_out), (vec![(8, 0.004)], 0));
        // An L = 1 probe after a run of L = 0 steps is all catch-up: no sample, where the
        // whole call's time would have made one step look 25 times dearer.
        let (samples, left_out) = draft_step_samples(8, 0.050, 1, &[step(300, 0.050)]);
        assert!(samples.is_empty());
        assert_eq!(left_out, 1);
    }

    #[test]
    fn a_drafter_without_forwards_is_timed_per_call() {
        assert_eq!(draft_step_samples(4, 0.006, 3, &[]), (vec![(4, 0.002)], 0));
        assert_eq!(draft_step_samples(4, 0.006, 0, &[]), (Vec::new(), 0));
        assert!(!DraftStep { seqs: 0, tokens: 0, secs: 0.0 }.is_steady());
    }

    #[test]
    fn only_chunks_that_ride_in_the_verify_forward_count_as_its_tokens() {
        // Chunks of their own (no ride): nothing shares the verify forward, however long the backlog.
        assert_eq!(prefill_tokens_in_verify(4096, 0), 0);
        // Riding: the backlog up to the ride budget.
        assert_eq!(prefill_tokens_in_verify(4096, 384), 384);
        assert_eq!(prefill_tokens_in_verify(100, 384), 100);
        assert_eq!(prefill_tokens_in_verify(0, 384), 0);
    }
}
