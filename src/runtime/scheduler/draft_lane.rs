//! The decode lane's drafting thread, for the three-lane policies (issue 5, items 1 and 3).
//!
//! The drafter (its model and its own KV cache) moves onto this thread, pinned to a core of
//! its own where there is one. The serving thread sends it messages through a bounded
//! `crossbeam` channel, in order: `Begin` when a request starts prefilling, `Propose` with a
//! batch of draft jobs, `Rollback` after each verification, `End` when a request releases its
//! cache. Results come back on a second bounded channel. So while this thread drafts, the
//! serving thread runs prefill chunks, and with `RuntimeConfig::overlap_groups` also the
//! verify step of another group of requests (the on-device form of asynchronous
//! draft/verify: PEARL, Liu et al. 2024; AMUSD, McDanel 2024; off by default, see
//! `runtime`'s "What overlaps"). A request is in one place at a time: while its draft is in
//! flight it sits in no queue of the serving thread.
//!
//! The drafter's own prefill is chunked like the target's and kept off the round's path. Under
//! `three-lane-adaptive`, a job whose drafter cache lags its context by a new prompt (or by
//! more than the prefill budget) is answered at once with an empty draft, so the request takes
//! a plain step in this round's verify forward, and its context becomes a prefill task:
//! between batches, while the target's forward runs, the thread prefills one chunk of the
//! oldest task and looks at its queue again. Once caught up, the request drafts in the next
//! round. Two earlier rules each held the whole round back (docs/perf.md, "New prompts off the
//! draft path"): a prompt under the budget was caught up inside the first draft step of the
//! batch, which every request in it waited for, and a longer one was drafted alone once caught
//! up, so its verify took a target forward of its own. The fixed-L policies keep those rules:
//! a plain step instead of a draft would change their sampled tokens, which do not depend on
//! the schedule. The draft step catches up whatever is left, so the order never changes the
//! greedy tokens.
use std::collections::VecDeque;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use vpd_sampling::SamplingParams;

use crate::error::Result;
use crate::spec::{DraftQuery, DraftStep, Drafter, Proposal};

/// One request's draft job.
pub(crate) struct DraftJob {
    pub id: usize,
    /// The request's cache epoch at dispatch: a result for an older epoch (the request was
    /// preempted or aborted meanwhile) is dropped.
    pub epoch: u64,
    pub seq: u64,
    pub context: Vec<u32>,
    pub len: usize,
    pub sampling: SamplingParams,
}

pub(crate) enum DraftMsg {
    Begin(u64),
    Propose(Vec<DraftJob>),
    Rollback { seq: u64, committed: usize },
    End(u64),
}

/// A finished batch: per job its id and epoch, and the proposals.
pub(crate) struct Drafted {
    pub jobs: Vec<(usize, u64)>,
    pub result: Result<Vec<Proposal>>,
    /// Wall time of the whole proposal: `steps` sequential draft forwards.
    pub secs: f64,
    /// The longest draft asked for, i.e. the number of draft steps the batch took.
    pub steps: usize,
    /// The drafter's own timing of each forward, where it reports one.
    pub step_times: Vec<DraftStep>,
}

pub(crate) enum LaneEvent {
    Drafted(Drafted),
    /// A `Begin` or `Rollback` failed: the drafter's state can no longer be trusted.
    Fault(String),
}

/// The serving thread's ends of the two queues.
pub(crate) struct LaneHandle {
    pub tx: Sender<DraftMsg>,
    pub rx: Receiver<LaneEvent>,
}

/// Bound of each queue: every live request has at most one message in flight per kind, and
/// the serving thread holds at most `max_running` requests.
pub(crate) fn queues(max_running: usize) -> (LaneHandle, Receiver<DraftMsg>, Sender<LaneEvent>) {
    let cap = 4 * max_running + 16;
    let (tx, rx_worker) = crossbeam_channel::bounded(cap);
    let (tx_worker, rx) = crossbeam_channel::bounded(cap);
    (LaneHandle { tx, rx }, rx_worker, tx_worker)
}

/// The thread's loop: runs until the serving thread drops its sender.
///
/// Every wake-up drains the whole queue and drafts everything asked for in **one** batch:
/// requests return from verification group by group, and drafting each group alone would
/// cost a full weight read per draft step per group (draft steps are bound by bandwidth, so
/// a batch of 32 costs about what a batch of 1 does). Bookkeeping messages are applied in
/// order before the batch runs; that is safe because a sequence has at most one draft in
/// flight and its `Begin`/`Rollback` always precede it, and an `End` for a sequence with a
/// queued job cancels the job (it comes back as an empty draft, which the serving thread
/// drops as stale).
///
/// A job whose drafter lags (see [`route`]) comes back at once as an empty draft with
/// `plain_meanwhile`, or is held until its prefill is done without; either way it queues a
/// prefill task. After each wake-up's batch the thread prefills one chunk of the oldest task.
pub(crate) fn run(drafter: &mut dyn Drafter, rx: &Receiver<DraftMsg>, tx: &Sender<LaneEvent>, chunk: usize, plain_meanwhile: bool) {
    super::super::service::pin_to_core(1, "decode lane");
    let chunk = chunk.max(1);
    let mut ready: Vec<DraftJob> = Vec::new();
    let mut tasks: VecDeque<PrefillTask> = VecDeque::new();
    loop {
        let mut msgs = Vec::new();
        if ready.is_empty() && tasks.is_empty() {
            match rx.recv() {
                Ok(m) => msgs.push(m),
                Err(_) => return,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(m) => msgs.push(m),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        // Jobs answered with an empty draft: cancelled ones, and those whose drafter lags.
        let mut empty: Vec<DraftJob> = Vec::new();
        for msg in msgs {
            let fault = match msg {
                DraftMsg::Begin(seq) => drafter.begin(seq).err().map(|e| format!("draft lane: begin: {e}")),
                DraftMsg::Rollback { seq, committed } => {
                    drafter.rollback(seq, committed).err().map(|e| format!("draft lane: rollback: {e}"))
                }
                DraftMsg::End(seq) => {
                    let (gone, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut ready).into_iter().partition(|j| j.seq == seq);
                    ready = keep;
                    empty.extend(gone);
                    let (gone, keep): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut tasks).into_iter().partition(|t| t.seq == seq);
                    tasks = keep;
                    empty.extend(gone.into_iter().filter_map(|t| t.held));
                    drafter.end(seq);
                    None
                }
                DraftMsg::Propose(more) => {
                    for j in more {
                        match route(drafter, &mut tasks, j, chunk, plain_meanwhile) {
                            Route::Draft(j) => ready.push(j),
                            Route::Empty(j) => empty.push(j),
                            Route::Held => {}
                        }
                    }
                    None
                }
            };
            if let Some(why) = fault {
                if tx.send(LaneEvent::Fault(why)).is_err() {
                    return;
                }
            }
        }
        let mut batches = Vec::new();
        if !empty.is_empty() {
            batches.push(Drafted {
                result: Ok(empty.iter().map(|_| Proposal::empty()).collect()),
                jobs: empty.into_iter().map(|j| (j.id, j.epoch)).collect(),
                secs: 0.0,
                steps: 0,
                step_times: Vec::new(),
            });
        }
        if !ready.is_empty() {
            batches.push(propose(drafter, std::mem::take(&mut ready)));
        }
        for b in batches {
            if tx.send(LaneEvent::Drafted(b)).is_err() {
                return;
            }
        }
        if let Some(t) = tasks.front() {
            // Done when the drafter takes less than a full chunk. A failure is left to the
            // draft step's own catch-up, which reports it on the requests it belongs to.
            if drafter.prefill(t.seq, &t.context, chunk).map_or(true, |n| n < chunk) {
                ready.extend(tasks.pop_front().and_then(|t| t.held));
            }
        }
    }
}

/// A draft step catches up a new prompt of at most this many tokens itself. A longer one is
/// prefilled between batches: inside the step it would hold back every request in the batch.
pub(crate) const IN_STEP_CATCH_UP: usize = 16;

/// A drafter prefill the thread runs between batches: the context the request last asked to
/// draft from, and the job itself where it waits for the prefill (fixed L).
struct PrefillTask {
    seq: u64,
    context: Vec<u32>,
    held: Option<DraftJob>,
}

/// Where [`route`] sends a job.
enum Route {
    /// Draft it in this wake-up's batch (catching up in the step whatever is left).
    Draft(DraftJob),
    /// Answer it with an empty draft: a plain step this round, while its prefill runs.
    Empty(DraftJob),
    /// Held in its prefill task, drafted once that is done.
    Held,
}

/// Routes a job by how far its drafter lags. A lag of more than `chunk` tokens (a long prompt,
/// or a long run of plain steps) always waits for its prefill. With `plain_meanwhile`, so does
/// a new prompt (nothing cached) of more than [`IN_STEP_CATCH_UP`] tokens, and a job whose
/// prefill task is still pending with more than that left; a waiting job is answered empty and
/// its task refreshed to the newer context. A request back from a short run of plain steps
/// catches up inside the draft step.
fn route(drafter: &dyn Drafter, tasks: &mut VecDeque<PrefillTask>, j: DraftJob, chunk: usize, plain_meanwhile: bool) -> Route {
    let Some(cached) = drafter.cached_len(j.seq) else {
        // Unknown to the drafter: the draft step reports the error on this request.
        return Route::Draft(j);
    };
    let lag = j.context.len().saturating_sub(cached);
    let queued = tasks.iter().position(|t| t.seq == j.seq);
    let new_prompt = lag > IN_STEP_CATCH_UP && (cached == 0 || queued.is_some());
    let wait = lag > chunk || (plain_meanwhile && new_prompt);
    match (wait, queued) {
        (false, queued) => {
            if let Some(i) = queued {
                tasks.remove(i);
            }
            Route::Draft(j)
        }
        (true, _) if !plain_meanwhile => {
            tasks.push_back(PrefillTask { seq: j.seq, context: j.context.clone(), held: Some(j) });
            Route::Held
        }
        (true, Some(i)) => {
            tasks[i].context.clone_from(&j.context);
            Route::Empty(j)
        }
        (true, None) => {
            tasks.push_back(PrefillTask { seq: j.seq, context: j.context.clone(), held: None });
            Route::Empty(j)
        }
    }
}

fn propose(drafter: &mut dyn Drafter, jobs: Vec<DraftJob>) -> Drafted {
    let queries: Vec<DraftQuery<'_>> = jobs
        .iter()
        .map(|j| DraftQuery {
            seq: j.seq,
            context: &j.context,
            len: j.len,
            sampling: &j.sampling,
        })
        .collect();
    let t0 = Instant::now();
    let result = drafter.propose(&queries);
    let secs = t0.elapsed().as_secs_f64();
    let steps = jobs.iter().map(|j| j.len).max().unwrap_or(1).max(1);
    Drafted {
        jobs: jobs.iter().map(|j| (j.id, j.epoch)).collect(),
        result,
        secs,
        steps,
        step_times: drafter.last_steps().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::spec::TreeShape;

    /// Logs every call. Its prefill takes chunks as `ModelDrafter` does (stopping before the
    /// last token) and its draft step catches up on the whole context.
    #[derive(Default)]
    struct Mock {
        log: Arc<Mutex<Vec<String>>>,
        cached: HashMap<u64, usize>,
    }

    impl Mock {
        fn note(&self, what: String) {
            self.log.lock().unwrap().push(what);
        }
    }

    impl Drafter for Mock {
        fn describe(&self) -> String {
            "mock".into()
        }
        fn begin(&mut self, seq: u64) -> Result<()> {
            self.cached.insert(seq, 0);
            self.note(format!("begin {seq}"));
            Ok(())
        }
        fn cached_len(&self, seq: u64) -> Option<usize> {
            self.cached.get(&seq).copied()
        }
        fn prefill(&mut self, seq: u64, context: &[u32], budget: usize) -> Result<usize> {
            let c = self.cached[&seq];
            let end = (context.len() - 1).min(c + budget);
            if end <= c {
                return Ok(0);
            }
            self.cached.insert(seq, end);
            self.note(format!("prefill {seq} {c}..{end}"));
            Ok(end - c)
        }
        fn propose(&mut self, queries: &[DraftQuery<'_>]) -> Result<Vec<Proposal>> {
            for q in queries {
                self.cached.insert(q.seq, q.context.len());
            }
            let seqs: Vec<u64> = queries.iter().map(|q| q.seq).collect();
            self.note(format!("propose {seqs:?}"));
            Ok(queries.iter().map(|_| Proposal::empty()).collect())
        }
        fn propose_tree(&mut self, _: &DraftQuery<'_>, _: &TreeShape, _: &mut vpd_sampling::Sampler) -> Result<Proposal> {
            Ok(Proposal::empty())
        }
        fn rollback(&mut self, _: u64, _: usize) -> Result<()> {
            Ok(())
        }
        fn end(&mut self, seq: u64) {
            self.note(format!("end {seq}"));
        }
    }

    fn job(seq: u64, context_len: usize) -> DraftJob {
        DraftJob {
            id: seq as usize,
            epoch: 0,
            seq,
            context: vec![7; context_len],
            len: 2,
            sampling: SamplingParams::greedy(),
        }
    }

    /// Runs the lane with a prefill chunk of 256; `script` sends messages and waits for log
    /// lines. Returns the log and the answers: per batch, its job ids and whether it drafted.
    fn with_lane(plain_meanwhile: bool, script: impl FnOnce(&dyn Fn(DraftMsg), &dyn Fn(&str))) -> (Vec<String>, Vec<(Vec<usize>, bool)>) {
        let mut mock = Mock::default();
        let log = mock.log.clone();
        let (LaneHandle { tx: to_lane, rx: from_lane }, rx, tx) = queues(4);
        let wait = |line: &str| {
            let t0 = Instant::now();
            while !log.lock().unwrap().iter().any(|l| l == line) {
                assert!(t0.elapsed() < Duration::from_secs(10), "never saw `{line}`: {:?}", log.lock().unwrap());
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        std::thread::scope(|s| {
            s.spawn(|| run(&mut mock, &rx, &tx, 256, plain_meanwhile));
            script(&|m| to_lane.send(m).unwrap(), &wait);
            // The lane stops once every sender is gone; its answers stay in the queue.
            drop(to_lane);
        });
        let answers = from_lane
            .try_iter()
            .filter_map(|e| match e {
                LaneEvent::Drafted(d) => Some((d.jobs.iter().map(|j| j.0).collect(), d.steps > 0)),
                LaneEvent::Fault(_) => None,
            })
            .collect();
        let log = log.lock().unwrap().clone();
        (log, answers)
    }

    #[test]
    fn a_new_prompt_takes_a_plain_step_while_it_is_prefilled_between_batches() {
        let (log, answers) = with_lane(true, |send, wait| {
            send(DraftMsg::Begin(2));
            send(DraftMsg::Begin(1));
            send(DraftMsg::Propose(vec![job(2, 3), job(1, 600)]));
            wait("prefill 1 512..599");
            // The next round, after its plain step: one token more, caught up in the step.
            send(DraftMsg::Propose(vec![job(1, 601)]));
            wait("propose [1]");
        });
        let want = ["begin 2", "begin 1", "propose [2]", "prefill 1 0..256", "prefill 1 256..512", "prefill 1 512..599", "propose [1]"];
        assert_eq!(log, want);
        // Request 1 is answered at once with an empty draft, in the same wake-up as the batch
        // of request 2: no draft of its own comes back later to need a verify forward alone.
        assert_eq!(answers, [(vec![1], false), (vec![2], true), (vec![1], true)]);
    }

    #[test]
    fn end_drops_a_pending_prefill() {
        let (log, answers) = with_lane(true, |send, wait| {
            send(DraftMsg::Begin(1));
            send(DraftMsg::Propose(vec![job(1, 10_000)]));
            send(DraftMsg::End(1));
            send(DraftMsg::Begin(3));
            send(DraftMsg::Propose(vec![job(3, 10)]));
            wait("propose [3]");
        });
        assert!(log.iter().all(|l| !l.starts_with("prefill 1")), "{log:?}");
        assert!(log.ends_with(&["begin 3".into(), "propose [3]".into()]), "{log:?}");
        assert_eq!(answers.last(), Some(&(vec![3], true)));
        assert!(answers.contains(&(vec![1], false)));
    }

    #[test]
    fn with_a_fixed_l_a_long_prompt_is_held_and_drafted_once_prefilled() {
        let (log, answers) = with_lane(false, |send, wait| {
            send(DraftMsg::Begin(2));
            send(DraftMsg::Begin(1));
            send(DraftMsg::Propose(vec![job(2, 3), job(1, 600)]));
            wait("propose [1]");
        });
        let want = ["begin 2", "begin 1", "propose [2]", "prefill 1 0..256", "prefill 1 256..512", "prefill 1 512..599", "propose [1]"];
        assert_eq!(log, want);
        // No empty draft: a plain step would change a fixed-L policy's sampled tokens.
        assert_eq!(answers, [(vec![2], true), (vec![1], true)]);
    }

    #[test]
    fn which_jobs_wait_for_their_prefill() {
        let mut mock = Mock::default();
        let mut tasks = VecDeque::new();
        for seq in 1..=4 {
            mock.begin(seq).unwrap();
        }
        let mut route_of = |mock: &Mock, j, plain_meanwhile| match route(mock, &mut tasks, j, 256, plain_meanwhile) {
            Route::Draft(_) => "draft",
            Route::Empty(_) => "empty",
            Route::Held => "held",
        };
        // A new prompt of up to IN_STEP_CATCH_UP tokens is caught up inside the draft step.
        assert_eq!(route_of(&mock, job(1, IN_STEP_CATCH_UP), true), "draft");
        // A longer one takes a plain step while it is prefilled; asked again before that is
        // done, it takes another.
        assert_eq!(route_of(&mock, job(2, IN_STEP_CATCH_UP + 1), true), "empty");
        assert_eq!(route_of(&mock, job(2, 40), true), "empty");
        // Partly prefilled, with a step's worth left: drafts now.
        mock.cached.insert(2, 35);
        assert_eq!(route_of(&mock, job(2, 40), true), "draft");
        // Back from a run of plain steps (cached, lag under the chunk): catches up in the step.
        mock.cached.insert(3, 500);
        assert_eq!(route_of(&mock, job(3, 600), true), "draft");
        // A lag of more than a chunk waits whatever the cache holds: answered empty, or held
        // with a fixed L, where a new prompt under the chunk drafts (catching up in the step).
        assert_eq!(route_of(&mock, job(3, 757), true), "empty");
        assert_eq!(route_of(&mock, job(4, 300), false), "held");
        assert_eq!(route_of(&mock, job(1, 200), false), "draft");
        // Unknown to the drafter: the draft step reports it.
        assert_eq!(route_of(&mock, job(9, 600), true), "draft");
        // Tasks left: 3 (empty, no job held) and 4 (its job held); 2's went when it drafted.
        let left: Vec<(u64, usize, bool)> = tasks.iter().map(|t| (t.seq, t.context.len(), t.held.is_some())).collect();
        assert_eq!(left, [(3, 757, false), (4, 300, true)]);
    }
}
