//! The serving loop: admission, lane selection, plan-then-run steps, preemption by recompute.
//! See the module docs of [`crate::runtime`] for the policies and what is simplified.
mod commit;
mod draft_lane;
mod drafting;
mod memory;
mod prefill_lane;
mod prefilling;

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vpd_sched::{
    BusyMeter, Controller, ControllerConfig, Lane, LaneQueue, LaneReady, PrioritySelector,
    RequestState,
};

use super::events::Event;
use super::metrics::RuntimeMetrics;
use super::service::Shared;
use super::state::{Req, Reqs};
use super::{Outcome, Policy, RunOutput, RuntimeConfig, Submission};
use crate::backend::{forward_picks, Backend, LogitsWanted, Pick, Picked, RowDraw, StepPlan, TARGET_STREAM};
use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::spec::{Drafter, Proposal};

/// One request's share of a forward step.
enum Work {
    /// One plain token.
    Decode,
    /// The newest token and a chain draft.
    Verify(Proposal),
    /// The next `n` tokens of its prefill.
    Prefill(usize),
}

impl Work {
    fn tokens(&self) -> usize {
        match self {
            Self::Decode => 1,
            Self::Verify(p) => 1 + p.tree.len(),
            Self::Prefill(n) => *n,
        }
    }
}

fn internal(what: impl Into<String>) -> EngineError {
    EngineError::Backend(format!("runtime: {}", what.into()))
}

/// Time constant of the target's busy meter: long against a step (5–10 ms at 8B), short
/// against a load change.
const BUSY_TAU_S: f64 = 0.5;

/// The serving loop over one target engine and an optional drafter.
pub struct Runtime<'e, 'd, B: Backend> {
    engine: &'e mut Engine<B>,
    drafter: Option<&'d mut (dyn Drafter + 'd)>,
    cfg: RuntimeConfig,
    reqs: Reqs,
    /// The prefill lane's backlog: waiting and prefilling requests, in admission order
    /// (preempted requests go back to the front).
    waiting: VecDeque<usize>,
    /// Hand-off queues: requests ready for a decode-lane step, drafts ready for verification.
    decode_q: LaneQueue<usize>,
    verify_q: LaneQueue<usize>,
    selector: PrioritySelector,
    controller: Option<Controller>,
    out: RunOutput,
    start: Instant,
    /// Requests admitted and not yet ended.
    live: usize,
    /// Requests holding target KV blocks.
    running: usize,
    /// Requests ended since the loop last reaped.
    ended: Vec<usize>,
    /// The target's recent busy fraction: every target forward shares HBM bandwidth with the
    /// decode lane's concurrent draft steps (the controller's `LaneLoad::verify_busy`).
    target_busy: BusyMeter,
    metrics: RuntimeMetrics,
    /// Set when serving over a [`super::service::Service`]: its flags, counters and the
    /// published metrics.
    shared: Option<Arc<Shared>>,
    /// The decode lane's drafting thread (three-lane policies with a drafter, while serving).
    lane: Option<draft_lane::LaneHandle>,
    /// Draft jobs (requests) out on the decode lane's thread.
    drafts_in_flight: usize,
    /// Requests whose lane draft came back empty: they take a plain decode step.
    plain_ready: Vec<usize>,
    /// The prefill lane's thread (three-lane policies with `prefill_thread`, when the backend
    /// can fork an executor).
    prefill_lane: Option<prefill_lane::PrefillHandle>,
    /// Requests of the chunk out on the prefill lane (empty: none is out).
    chunk_out: Vec<usize>,
    /// A chunk back from the prefill lane, not yet applied.
    chunk_back: Option<prefill_lane::ChunkDone>,
    /// What the controller was shown, for the run's report.
    tally: drafting::ControllerTally,
}

impl<'e, 'd, B: Backend> Runtime<'e, 'd, B> {
    /// # Errors
    /// An invalid configuration, or a speculating policy without a drafter.
    pub fn new(
        engine: &'e mut Engine<B>,
        drafter: Option<&'d mut (dyn Drafter + 'd)>,
        cfg: &RuntimeConfig,
    ) -> Result<Self> {
        cfg.validate()?;
        if cfg.policy.speculates() && drafter.is_none() {
            return Err(EngineError::InvalidRequest {
                field: "draft",
                detail: format!("policy {} needs a drafter", cfg.policy),
            });
        }
        let controller = if cfg.policy == Policy::ThreeLaneAdaptive {
            let cc = ControllerConfig {
                l_max: cfg.num_draft as u8,
                speculation: true,
                plain_beside: cfg.plain_beside_drafts,
                ..cfg.controller.clone()
            };
            Some(
                Controller::new(cc, cfg.cost_prior).map_err(|e| EngineError::InvalidRequest {
                    field: "controller",
                    detail: e.to_string(),
                })?,
            )
        } else {
            None
        };
        let bad_bounds = |e: vpd_sched::priority::BoundsError| EngineError::InvalidRequest {
            field: "starvation",
            detail: e.to_string(),
        };
        // Only requests that hold KV blocks sit in the hand-off queues.
        let cap = cfg.max_running + 1;
        let queue = || LaneQueue::new(cap).map_err(|e| internal(e.to_string()));
        Ok(Self {
            selector: PrioritySelector::new(cfg.starvation).map_err(bad_bounds)?,
            decode_q: queue()?,
            verify_q: queue()?,
            engine,
            drafter,
            cfg: cfg.clone(),
            reqs: Reqs::default(),
            waiting: VecDeque::new(),
            controller,
            out: RunOutput::default(),
            start: Instant::now(),
            live: 0,
            running: 0,
            ended: Vec::new(),
            target_busy: BusyMeter::new(BUSY_TAU_S, 0.0),
            metrics: RuntimeMetrics::new(cfg.num_draft),
            shared: None,
            lane: None,
            drafts_in_flight: 0,
            plain_ready: Vec::new(),
            prefill_lane: None,
            chunk_out: Vec::new(),
            chunk_back: None,
            tally: drafting::ControllerTally::default(),
        })
    }

    /// Serves for a [`super::service::Service`]: requests carry event sinks, ended ones are
    /// dropped after their last event, an engine fault fails the live requests instead of
    /// stopping the loop, and metrics are published after every step.
    pub(super) fn with_shared(mut self, shared: Arc<Shared>) -> Self {
        self.shared = Some(shared);
        self
    }

    fn now_s(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Serves until `rx` is closed and every admitted request has ended. `on_done` is called
    /// once per ended request.
    ///
    /// # Errors
    /// A backend failure or a broken internal invariant (never a request-level problem:
    /// those abort the request).
    pub fn serve(
        &mut self,
        start: Instant,
        rx: &Receiver<Submission>,
        on_done: &mut dyn FnMut(),
    ) -> Result<RunOutput> {
        let threaded = matches!(self.cfg.policy, Policy::ThreeLane | Policy::ThreeLaneAdaptive);
        if !threaded {
            return self.serve_loop(start, rx, on_done);
        }
        let drafter = self.drafter.take();
        let executor = if self.cfg.prefill_thread {
            self.engine.backend_mut().fork_executor()?
        } else {
            None
        };
        if drafter.is_none() && executor.is_none() {
            return self.serve_loop(start, rx, on_done);
        }
        // The lane threads borrow the drafter and the second executor for the run; dropping
        // the handles closes their queues and ends them.
        let chunk = self.cfg.prefill_budget;
        // The controller's L already follows the timing; a fixed L keeps its sampled tokens
        // independent of the schedule, so its new prompts never take a plain step instead.
        let plain_meanwhile = self.cfg.policy == Policy::ThreeLaneAdaptive;
        std::thread::scope(|s| {
            let spawn_err = |what: &str, e: std::io::Error| internal(format!("cannot start the {what} lane's thread: {e}"));
            let mut workers = Vec::new();
            if let Some(drafter) = drafter {
                let (handle, jobs, events) = draft_lane::queues(self.cfg.max_running);
                let w = std::thread::Builder::new()
                    .name("vpd-decode-lane".into())
                    .spawn_scoped(s, move || draft_lane::run(drafter, &jobs, &events, chunk, plain_meanwhile))
                    .map_err(|e| spawn_err("decode", e))?;
                workers.push(("decode", w));
                self.lane = Some(handle);
            }
            if let Some(mut executor) = executor {
                let (handle, jobs, done) = prefill_lane::queues();
                let w = std::thread::Builder::new()
                    .name("vpd-prefill-lane".into())
                    .spawn_scoped(s, move || prefill_lane::run(executor.as_mut(), &jobs, &done))
                    .map_err(|e| spawn_err("prefill", e))?;
                workers.push(("prefill", w));
                self.prefill_lane = Some(handle);
            }
            let out = self.serve_loop(start, rx, on_done);
            self.lane = None;
            self.prefill_lane = None;
            for (what, w) in workers {
                w.join().map_err(|_| internal(format!("the {what} lane's thread panicked")))?;
            }
            out
        })
    }

    fn serve_loop(
        &mut self,
        start: Instant,
        rx: &Receiver<Submission>,
        on_done: &mut dyn FnMut(),
    ) -> Result<RunOutput> {
        self.start = start;
        let mut closed = false;
        loop {
            loop {
                match rx.try_recv() {
                    Ok(s) => self.admit(s)?,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            self.sweep()?;
            let progressed = match self.step() {
                Ok(p) => p,
                // Serving: the requests in flight fail with the fault, the server stays up.
                Err(e) if self.shared.is_some() => {
                    tracing::error!("engine fault: {e}");
                    self.metrics.engine_faults += 1;
                    self.fail_all(&format!("engine fault: {e}"))?;
                    true
                }
                Err(e) => return Err(e),
            };
            self.reap(on_done);
            if progressed {
                continue;
            }
            if self.drafts_in_flight > 0 || !self.chunk_out.is_empty() {
                // Everything runnable is out on a lane thread: wait for an answer.
                let t0 = Instant::now();
                let waited = self.wait_for_lanes(Duration::from_millis(50));
                self.out.loop_time.lane_wait_s += t0.elapsed().as_secs_f64();
                if let Err(e) = waited {
                    if self.shared.is_none() {
                        return Err(e);
                    }
                    self.metrics.engine_faults += 1;
                    self.fail_all(&format!("engine fault: {e}"))?;
                }
                self.reap(on_done);
                continue;
            }
            if self.live > 0 {
                let why = format!(
                    "stalled with {} live requests and no runnable work",
                    self.live
                );
                if self.shared.is_none() {
                    return Err(internal(why));
                }
                self.fail_all(&format!("runtime: {why}"))?;
                self.reap(on_done);
            }
            if closed {
                break;
            }
            // Idle: wait for the next arrival (waking now and then to see the service's flags).
            let t0 = Instant::now();
            let next = rx.recv_timeout(Duration::from_millis(50));
            self.out.loop_time.idle_s += t0.elapsed().as_secs_f64();
            match next {
                Ok(s) => self.admit(s)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => closed = true,
            }
            self.reap(on_done);
        }
        let mut out = std::mem::take(&mut self.out);
        out.duration_s = self.now_s();
        out.metrics = self.snapshot();
        let t = &mut out.loop_time;
        t.wall_s = start.elapsed().as_secs_f64();
        t.host_s = (t.wall_s - t.target_forward_s - t.draft_in_thread_s - t.lane_wait_s - t.idle_s).max(0.0);
        out.controller = self.controller.as_ref().map(|c| self.tally.summary(c));
        for r in self.reqs.take_all() {
            let result = match (&r.error, r.finish) {
                (Some(e), _) => Err(e.clone()),
                (None, Some(f)) => Ok(f),
                (None, None) => {
                    return Err(internal("a request ended neither finished nor aborted"))
                }
            };
            out.outcomes.push(Outcome {
                tokens: r.context[r.prompt_len..].to_vec(),
                result,
                preemptions: r.preemptions,
            });
            out.records.push(r.record);
        }
        Ok(out)
    }

    /// Between steps: aborts requests whose client went away and, when the service asks,
    /// every live request.
    fn sweep(&mut self) -> Result<()> {
        if let Some(sh) = &self.shared {
            if sh.abort_all.load(Ordering::Acquire) {
                let why = sh.abort_reason();
                return self.fail_all(&why);
            }
        }
        let gone: Vec<usize> = self
            .reqs
            .iter()
            .filter(|(_, r)| !r.state.is_terminal() && r.disconnected())
            .map(|(id, _)| id)
            .collect();
        for id in gone {
            self.abort(id, "client disconnected".into())?;
        }
        Ok(())
    }

    /// Aborts every live request with `why`.
    fn fail_all(&mut self, why: &str) -> Result<()> {
        let live: Vec<usize> = self
            .reqs
            .iter()
            .filter(|(_, r)| !r.state.is_terminal())
            .map(|(id, _)| id)
            .collect();
        for id in live {
            self.abort(id, why.to_string())?;
        }
        Ok(())
    }

    /// Reports ended requests, drops served ones, publishes the metrics.
    fn reap(&mut self, on_done: &mut dyn FnMut()) {
        for id in std::mem::take(&mut self.ended) {
            on_done();
            if self.reqs[id].sink.is_some() {
                self.reqs.remove(id);
                if let Some(sh) = &self.shared {
                    sh.in_flight.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
        if let Some(sh) = &self.shared {
            let m = self.snapshot();
            if let Ok(mut slot) = sh.metrics.lock() {
                *slot = m;
            }
        }
    }

    /// The current metrics, gauges included.
    fn snapshot(&self) -> RuntimeMetrics {
        let mut m = self.metrics.clone();
        let blocks = self.engine.blocks();
        m.running = self.running;
        m.waiting = self
            .waiting
            .iter()
            .filter(|&&id| self.reqs[id].state == RequestState::Waiting)
            .count();
        m.lane_queue = [self.decode_q.len(), self.verify_q.len(), self.waiting.len()];
        m.kv_total_blocks = blocks.num_total();
        m.kv_used_blocks = blocks.num_total() - blocks.num_free();
        m
    }

    /// A served request left the bounded waiting queue (started, or ended before starting).
    fn left_queue(&mut self, id: usize) {
        let r = &mut self.reqs[id];
        if std::mem::take(&mut r.queued) {
            if let Some(sh) = &self.shared {
                sh.queued.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    fn admit(&mut self, s: Submission) -> Result<()> {
        let accept = self
            .cfg
            .synthetic
            .map(|a| a.for_request(self.cfg.seed, self.reqs.next_id() as u64));
        let id = self.reqs.insert(Req::new(s.request, s.send_s, accept, s.sink));
        self.reqs[id].logprobs = s.logprobs.map(|k| k.min(super::events::MAX_TOP_LOGPROBS));
        self.live += 1;
        let cfg = self.engine.backend().config();
        let (vocab, context) = (cfg.vocab_size, cfg.max_position_embeddings);
        let r = &self.reqs[id];
        let problem = if let Err(e) = r.req.validate(vocab, context) {
            Some(e.to_string())
        } else if r.req.max_new_tokens == 0 {
            Some("max_new_tokens is 0".to_string())
        } else {
            // Rejected up front if it could not run even with the whole cache to itself, so
            // that preempting everyone else always lets the oldest request progress.
            let spec = if self.cfg.policy.speculates() {
                self.cfg.num_draft
            } else {
                0
            };
            let tokens = (r.prompt_len + r.req.max_new_tokens).min(context) + spec + 1;
            let (bs, total) = (
                self.engine.blocks().block_size(),
                self.engine.blocks().num_total(),
            );
            let need = tokens.div_ceil(bs);
            (need > total).then(|| format!("needs {need} KV blocks for {tokens} tokens, the whole cache has {total}: rejected"))
        };
        match problem {
            Some(why) => {
                self.reqs[id].rejected = true;
                self.abort(id, why)
            }
            None => {
                self.waiting.push_back(id);
                Ok(())
            }
        }
    }

    /// One step of the policy. Returns false when there was nothing to run.
    fn step(&mut self) -> Result<bool> {
        match self.cfg.policy {
            Policy::NoSpec => {
                self.metrics.l_histogram[0] += self.decode_q.len() as u64;
                let mut entries: Vec<(usize, Work)> = drain(&self.decode_q)
                    .into_iter()
                    .map(|id| (id, Work::Decode))
                    .collect();
                entries.extend(self.plan_prefill()?);
                self.run_entries(entries)
            }
            Policy::SingleLane => {
                let ids = drain(&self.decode_q);
                let mut entries = self.draft_round(&ids, false)?;
                // The drafts are verified in this same step, with the prefill chunks.
                for e in &mut entries {
                    if let Work::Verify(_) = e.1 {
                        let r = &mut self.reqs[e.0];
                        if r.state == RequestState::Drafting {
                            r.to(RequestState::Verifying)?;
                        }
                    }
                }
                entries.extend(self.plan_prefill()?);
                self.run_entries(entries)
            }
            Policy::ThreeLane | Policy::ThreeLaneAdaptive => {
                self.collect_drafts(None)?;
                // The prefill lane's thread, where there is one, runs its chunks beside this
                // thread's forwards: apply what came back, send the next chunk first.
                let chunked = self.apply_chunk()? | self.dispatch_chunk()?;
                // Gathering: requests back from verification wait while others are still out
                // drafting or queued for verification, so that one draft batch and one verify
                // forward serve everyone each round. Draft and verify steps are both bound by
                // weight reads at these batch sizes: separate groups would pay each read once
                // per group, and overlapping them on one GPU shares the same bandwidth.
                // Plain (L = 0) steps likewise wait for the drafts out, to ride in their
                // verify forward.
                let gather = !self.cfg.overlap_groups
                    && (self.drafts_in_flight > 0 || !self.verify_q.is_empty());
                let hold_plain = !self.cfg.overlap_groups && self.drafts_in_flight > 0;
                let decode = (!gather && !self.decode_q.is_empty()) || (!hold_plain && !self.plain_ready.is_empty());
                let verify = !self.verify_q.is_empty();
                // Riding prefill waits for this round's verify (or plain) forward, which every
                // round has while anything decodes: the prefill lane is offered a forward of its
                // own only when there is none to ride. Offered one at every round's start, its
                // anti-starvation rules took one whenever the oldest prompt had waited 50 ms,
                // and each stopped every decoding request for a whole read of the weights (one
                // round in six on an H100 at 50 req/s: docs/perf.md, "Prefill forwards of their
                // own"), while riding moves the queue on by up to `prefill_ride` tokens a round.
                let rides = self.cfg.prefill_ride > 0 && (self.drafts_in_flight > 0 || decode || verify);
                let ready = LaneReady {
                    decode,
                    verify,
                    prefill: (self.prefill_lane.is_none() && self.prefill_ready() && !rides).then(|| self.prefill_age()),
                };
                match self.selector.select(&ready) {
                    None => Ok(chunked),
                    // The target's decode-lane work (plain steps) and verify-lane work share
                    // one forward whenever both are ready: a forward below the compute ridge
                    // costs one read of the weights whatever its few hundred rows, so two
                    // separate forwards would pay that read twice (at L = 0 for some requests
                    // and L > 0 for others, every round). The lane that was picked decides
                    // when the forward runs; the other's ready work rides along.
                    Some(Lane::Decode) => {
                        let ids = if gather { Vec::new() } else { drain(&self.decode_q) };
                        let plain = if ids.is_empty() { Vec::new() } else { self.draft_round(&ids, true)? };
                        if !self.cfg.overlap_groups && self.drafts_in_flight > 0 {
                            if self.cfg.plain_beside_drafts {
                                // A plain step now, beside the drafts; the verify forward of
                                // this round gives these requests another.
                                if !plain.is_empty() {
                                    self.out.loop_time.plain_beside_drafts += 1;
                                    self.run_entries(plain)?;
                                }
                                return Ok(true);
                            }
                            // Plain (L = 0) steps ride in the verify forward of this round.
                            self.plain_ready.extend(plain.into_iter().map(|(id, _)| id));
                            return Ok(true);
                        }
                        let mut entries = plain;
                        entries.extend(self.take_plain());
                        if !entries.is_empty() {
                            entries.extend(self.take_verify()?);
                            self.ride_prefill(&mut entries)?;
                        }
                        self.run_entries(entries)?;
                        Ok(true)
                    }
                    Some(Lane::Verify) => {
                        let mut entries = self.take_verify()?;
                        entries.extend(self.take_plain());
                        if self.cfg.plain_beside_drafts {
                            // Those back from their plain step beside the drafts (and any
                            // request that just finished its prefill) take one more here.
                            entries.extend(drain(&self.decode_q).into_iter().map(|id| (id, Work::Decode)));
                        }
                        self.ride_prefill(&mut entries)?;
                        Ok(self.run_entries(entries)? || chunked)
                    }
                    Some(Lane::Prefill) => {
                        let entries = self.plan_prefill()?;
                        Ok(self.run_entries(entries)? || chunked)
                    }
                }
            }
        }
    }

    /// Adds up to `prefill_ride` prompt tokens of prefill chunks to a decode or verify
    /// forward, as single-lane does: a prefill forward of its own costs a whole read of the
    /// weights and holds the next verify step back. (Topping the forward up to `prefill_ride`
    /// tokens in all, the rule before 2026-12-05, left little room at 128 running requests,
    /// whose drafts alone fill a few hundred rows, so most chunks ran in forwards of their own
    /// beside the drafts: docs/perf.md, "Where the TPOT tail comes from".)
    fn ride_prefill(&mut self, entries: &mut Vec<(usize, Work)>) -> Result<()> {
        let room = self.cfg.prefill_ride;
        // With a prefill lane thread every chunk goes there (validate refuses both at once).
        if room > 0 && self.prefill_lane.is_none() && self.prefill_ready() {
            entries.extend(self.plan_prefill_within(room)?);
        }
        Ok(())
    }

    /// The decode lane's plain (L = 0) target steps that are ready.
    fn take_plain(&mut self) -> Vec<(usize, Work)> {
        std::mem::take(&mut self.plain_ready)
            .into_iter()
            .map(|id| (id, Work::Decode))
            .collect()
    }

    /// The drafts waiting in the verify lane's queue.
    fn take_verify(&mut self) -> Result<Vec<(usize, Work)>> {
        drain(&self.verify_q)
            .into_iter()
            .map(|id| {
                let p = self.reqs[id]
                    .proposal
                    .take()
                    .ok_or_else(|| internal("a verifying request has no draft"))?;
                Ok((id, Work::Verify(p)))
            })
            .collect()
    }

    /// Runs one target forward over `entries` and applies its results. Returns whether any
    /// work ran.
    fn run_entries(&mut self, mut entries: Vec<(usize, Work)>) -> Result<bool> {
        if entries.is_empty() {
            return Ok(false);
        }
        self.make_room(&mut entries)?;
        if entries.is_empty() {
            return Ok(true);
        }
        let (plan, [has_decode, has_verify, has_prefill]) = self.build_plan(&entries)?;
        let t0 = Instant::now();
        let (picked, logits) = {
            let picks = self.picks(&entries, &plan);
            let want_logits = self.wants_logits(&entries);
            let backend = self.engine.backend_mut();
            let layers = backend.config().num_hidden_layers;
            forward_picks(backend, &plan, layers, &picks, want_logits)?
        };
        let dt = t0.elapsed().as_secs_f64();
        self.out.loop_time.target_forward_s += dt;
        self.out.loop_time.forwards += 1;
        if has_prefill && !has_decode && !has_verify {
            if self.drafts_in_flight > 0 {
                self.out.loop_time.prefill_beside_drafts += 1;
            } else if !self.decode_q.is_empty() || !self.plain_ready.is_empty() {
                self.out.loop_time.prefill_while_decode_waits += 1;
            }
        }
        let now = self.now_s();
        self.target_busy.record(now, dt);
        if let (Some(c), false) = (&mut self.controller, has_prefill) {
            c.observe_verify_step(plan.num_tokens(), plan.seqs.len(), dt);
        }
        for (lane, used) in [has_decode, has_verify, has_prefill]
            .into_iter()
            .enumerate()
        {
            self.out.lane_steps[lane] += u64::from(used);
        }
        let t = self.now_s();
        for (s, ((id, w), picked)) in entries.into_iter().zip(&picked).enumerate() {
            let rows: Vec<&[f32]> = logits.as_ref().map(|l| l.seq_rows(s).collect()).unwrap_or_default();
            match w {
                Work::Decode => {
                    let tok = *picked
                        .drawn()?
                        .last()
                        .ok_or_else(|| internal("decode step returned no row"))?;
                    let r = &mut self.reqs[id];
                    r.note_logprob_of(rows.last().copied(), tok)?;
                    r.cached += 1;
                    let n = self.push_tokens(id, &[tok]);
                    self.settle(id, n, t)?;
                }
                Work::Verify(p) => self.apply_verify(id, &p, picked, &rows, t)?,
                Work::Prefill(n) => self.apply_prefill(id, n, picked, rows.last().copied(), t)?,
            }
        }
        self.check_blocks()?;
        Ok(true)
    }

    /// Grows each request's cache for its work and lays out the step. Returns the plan and
    /// which lanes' work it carries: `[decode, verify, prefill]`.
    fn build_plan(&mut self, entries: &[(usize, Work)]) -> Result<(StepPlan, [bool; 3])> {
        let mut seqs = Vec::with_capacity(entries.len());
        let (mut has_prefill, mut has_verify, mut has_decode) = (false, false, false);
        for (id, w) in entries {
            let r = &self.reqs[*id];
            let seq = r
                .seq
                .ok_or_else(|| internal("work for a request without a cache"))?;
            let (tokens, logits) = match w {
                Work::Decode => {
                    has_decode = true;
                    (vec![r.newest()?], LogitsWanted::Last)
                }
                Work::Verify(p) => {
                    has_verify = true;
                    let mut t = vec![r.newest()?];
                    t.extend_from_slice(&p.tree.tokens);
                    (t, LogitsWanted::All)
                }
                Work::Prefill(n) => {
                    has_prefill = true;
                    let last = r.cached + n == r.prefill_target && r.out_len() == 0;
                    (
                        r.context[r.cached..r.cached + n].to_vec(),
                        if last {
                            LogitsWanted::Last
                        } else {
                            LogitsWanted::None
                        },
                    )
                }
            };
            let start_pos = r.cached;
            self.engine.append(seq, tokens.len())?;
            seqs.push(self.engine.seq_step(seq, tokens, start_pos, logits));
        }
        Ok((StepPlan { seqs }, [has_decode, has_verify, has_prefill]))
    }

    /// What each entry wants from its rows (plan order): a draw for a decode step and for the
    /// prompt's last prefill row, chain verification of a draft (every row's own draw under
    /// labelled synthetic acceptance, which takes row k's), nothing for an inner prefill
    /// chunk. Each request draws with its own seed, counted by the position of the token the
    /// row decides, so its tokens do not depend on which requests share the step.
    fn picks<'w>(&self, entries: &'w [(usize, Work)], plan: &StepPlan) -> Vec<Pick<'w>> {
        entries
            .iter()
            .zip(&plan.seqs)
            .map(|((id, w), seq)| {
                let r = &self.reqs[*id];
                let draw = RowDraw { sampling: r.req.sampling, counter: r.context.len() as u64, stream: TARGET_STREAM };
                match w {
                    _ if seq.logits == LogitsWanted::None => Pick::Skip,
                    Work::Verify(p) if r.accept.is_none() => Pick::Chain { drafts: &p.tree.tokens, q: p.chain_q(), draw },
                    Work::Decode | Work::Verify(_) | Work::Prefill(_) => Pick::Draw { draw, keep: false },
                }
            })
            .collect()
    }

    /// Whether a request of `entries` reports logprobs (or `pick_on_host` is set), so that the
    /// step's logits rows must come to the host.
    fn wants_logits(&self, entries: &[(usize, Work)]) -> bool {
        self.cfg.pick_on_host || entries.iter().any(|(id, _)| self.reqs[*id].logprobs.is_some())
    }

    /// A prefill chunk of `n` tokens of request `id` ran; `picked` is its pick's outcome (a
    /// draw from the prompt's last row) and `row` that row's logits where they came to the host.
    pub(super) fn apply_prefill(&mut self, id: usize, n: usize, picked: &Picked, row: Option<&[f32]>, t: f64) -> Result<()> {
        self.reqs[id].cached += n;
        let r = &self.reqs[id];
        if r.cached < r.prefill_target {
            return Ok(());
        }
        self.waiting.retain(|&w| w != id);
        let emitted = if r.out_len() == 0 {
            let tok = *picked
                .drawn()?
                .last()
                .ok_or_else(|| internal("prefill returned no row"))?;
            self.reqs[id].note_logprob_of(row, tok)?;
            self.push_tokens(id, &[tok])
        } else {
            0
        };
        self.settle(id, emitted, t)
    }

    /// The block manager's invariants, and one cached sequence per running request.
    fn check_blocks(&self) -> Result<()> {
        self.engine
            .blocks()
            .check_invariants()
            .map_err(|e| internal(format!("block invariant broken: {e}")))?;
        if self.engine.blocks().num_sequences() != self.running {
            return Err(internal(format!(
                "{} cached sequences but {} running requests",
                self.engine.blocks().num_sequences(),
                self.running
            )));
        }
        Ok(())
    }
}

fn drain(q: &LaneQueue<usize>) -> Vec<usize> {
    std::iter::from_fn(|| q.try_pop()).collect()
}

/// Removes `id` from a hand-off queue, keeping the others' order (one thread owns the
/// queues here, so draining and re-pushing is safe).
fn remove_from(q: &LaneQueue<usize>, id: usize) {
    for other in drain(q) {
        if other != id {
            // Re-pushing at most what was drained cannot overflow.
            let _ = q.try_push(other);
        }
    }
}
