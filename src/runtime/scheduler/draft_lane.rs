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
//! The drafter's own prefill is chunked like the target's: a request whose drafter cache lags
//! by more than the prefill budget (a new prompt) is held apart and prefilled one chunk per
//! round between batches, instead of inside the first draft step of a batch, where a long
//! prompt stalled every draft in it (a long prompt blocking decode, inside the decode lane).
//! The draft step catches up whatever is left, so the order never changes the tokens.
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
/// A job whose drafter cache lags its context by more than `chunk` tokens (a new request: its
/// prompt) waits apart. After each batch the thread prefills one chunk of the oldest such job
/// and looks at its queue again; once caught up, the job joins the next batch.
pub(crate) fn run(drafter: &mut dyn Drafter, rx: &Receiver<DraftMsg>, tx: &Sender<LaneEvent>, chunk: usize) {
    super::super::service::pin_to_core(1, "decode lane");
    let chunk = chunk.max(1);
    let mut ready: Vec<DraftJob> = Vec::new();
    let mut lagging: VecDeque<DraftJob> = VecDeque::new();
    loop {
        let mut msgs = Vec::new();
        if ready.is_empty() && lagging.is_empty() {
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
        let mut cancelled: Vec<DraftJob> = Vec::new();
        for msg in msgs {
            let fault = match msg {
                DraftMsg::Begin(seq) => drafter.begin(seq).err().map(|e| format!("draft lane: begin: {e}")),
                DraftMsg::Rollback { seq, committed } => {
                    drafter.rollback(seq, committed).err().map(|e| format!("draft lane: rollback: {e}"))
                }
                DraftMsg::End(seq) => {
                    let (gone, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut ready).into_iter().partition(|j| j.seq == seq);
                    ready = keep;
                    cancelled.extend(gone);
                    let (gone, keep): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut lagging).into_iter().partition(|j| j.seq == seq);
                    lagging = keep;
                    cancelled.extend(gone);
                    drafter.end(seq);
                    None
                }
                DraftMsg::Propose(more) => {
                    for j in more {
                        if drafter.cached_len(j.seq).is_some_and(|c| j.context.len() > c + chunk) {
                            lagging.push_back(j);
                        } else {
                            ready.push(j);
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
        if !cancelled.is_empty() {
            batches.push(Drafted {
                result: Ok(cancelled.iter().map(|_| Proposal::empty()).collect()),
                jobs: cancelled.into_iter().map(|j| (j.id, j.epoch)).collect(),
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
        if let Some(j) = lagging.front() {
            // Done when the drafter takes less than a full chunk. A failure is left to the
            // draft step's own catch-up, which reports it on the requests it belongs to.
            let done = drafter.prefill(j.seq, &j.context, chunk).map_or(true, |n| n < chunk);
            if done {
                ready.extend(lagging.pop_front());
            }
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

    /// Runs the lane with a prefill chunk of 256 over `msgs` (all queued before it starts)
    /// until `done` shows in its log; returns the log and the drafted batches' job ids.
    fn run_until(msgs: Vec<DraftMsg>, done: &str) -> (Vec<String>, Vec<Vec<usize>>) {
        let mut mock = Mock::default();
        let log = mock.log.clone();
        let (handle, rx, tx) = queues(4);
        for m in msgs {
            handle.tx.send(m).unwrap();
        }
        let mut batches = Vec::new();
        std::thread::scope(|s| {
            s.spawn(|| run(&mut mock, &rx, &tx, 256));
            let t0 = Instant::now();
            while !log.lock().unwrap().iter().any(|l| l == done) {
                assert!(t0.elapsed() < Duration::from_secs(10), "never saw `{done}`: {:?}", log.lock().unwrap());
                std::thread::sleep(Duration::from_millis(1));
            }
            for e in handle.rx.recv_timeout(Duration::from_secs(10)).into_iter().chain(handle.rx.try_iter()) {
                if let LaneEvent::Drafted(d) = e {
                    batches.push(d.jobs.iter().map(|j| j.0).collect());
                }
            }
            drop(handle);
        });
        let log = log.lock().unwrap().clone();
        (log, batches)
    }

    #[test]
    fn a_long_prompt_is_prefilled_in_chunks_between_batches_not_inside_one() {
        let msgs = vec![DraftMsg::Begin(2), DraftMsg::Begin(1), DraftMsg::Propose(vec![job(2, 3), job(1, 600)])];
        let (log, _) = run_until(msgs, "propose [1]");
        let want = ["begin 2", "begin 1", "propose [2]", "prefill 1 0..256", "prefill 1 256..512", "prefill 1 512..599", "propose [1]"];
        assert_eq!(log, want);
    }

    #[test]
    fn end_cancels_a_job_waiting_for_its_prefill() {
        let msgs = vec![
            DraftMsg::Begin(1),
            DraftMsg::Propose(vec![job(1, 10_000)]),
            DraftMsg::End(1),
            DraftMsg::Begin(3),
            DraftMsg::Propose(vec![job(3, 10)]),
        ];
        let (log, batches) = run_until(msgs, "propose [3]");
        assert_eq!(log, ["begin 1", "end 1", "begin 3", "propose [3]"]);
        // The cancelled job comes back (as an empty draft) before the real batch.
        assert_eq!(batches[0], [1]);
    }
}
