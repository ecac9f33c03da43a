//! The decode lane's drafting thread, for the three-lane policies (issue 5, items 1 and 3).
//!
//! The drafter (its model and its own KV cache) moves onto this thread, pinned to a core of
//! its own where there is one. The serving thread sends it messages through a bounded
//! `crossbeam` channel, in order: `Begin` when a request starts prefilling, `Propose` with a
//! batch of draft jobs, `Rollback` after each verification, `End` when a request releases its
//! cache. Results come back on a second bounded channel. So while the serving thread runs a
//! verify step (or a prefill chunk) for one group of requests, this thread drafts for
//! another: draft and verify overlap, the on-device form of asynchronous draft/verify
//! (PEARL, Liu et al. 2024; AMUSD, McDanel 2024). A request is in one place at a time: while
//! its draft is in flight it sits in no queue of the serving thread.
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use vpd_sampling::{Sampler, SamplingParams};

use crate::error::Result;
use crate::spec::{DraftQuery, Drafter, Proposal};

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
    pub sampler: Sampler,
}

pub(crate) enum DraftMsg {
    Begin(u64),
    Propose(Vec<DraftJob>),
    Rollback { seq: u64, committed: usize },
    End(u64),
}

/// A finished batch: per job its id, epoch and sampler (handed back), and the proposals.
pub(crate) struct Drafted {
    pub jobs: Vec<(usize, u64, Sampler)>,
    pub result: Result<Vec<Proposal>>,
    /// Wall time of the whole proposal: `steps` sequential draft forwards.
    pub secs: f64,
    /// The longest draft asked for, i.e. the number of draft steps the batch took.
    pub steps: usize,
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
pub(crate) fn run(drafter: &mut dyn Drafter, rx: &Receiver<DraftMsg>, tx: &Sender<LaneEvent>) {
    super::super::service::pin_to_core(1, "decode lane");
    while let Ok(first) = rx.recv() {
        let mut jobs: Vec<DraftJob> = Vec::new();
        let mut cancelled: Vec<DraftJob> = Vec::new();
        for msg in std::iter::once(first).chain(rx.try_iter()) {
            let fault = match msg {
                DraftMsg::Begin(seq) => drafter.begin(seq).err().map(|e| format!("draft lane: begin: {e}")),
                DraftMsg::Rollback { seq, committed } => {
                    drafter.rollback(seq, committed).err().map(|e| format!("draft lane: rollback: {e}"))
                }
                DraftMsg::End(seq) => {
                    let (gone, keep): (Vec<_>, Vec<_>) = jobs.into_iter().partition(|j| j.seq == seq);
                    jobs = keep;
                    cancelled.extend(gone);
                    drafter.end(seq);
                    None
                }
                DraftMsg::Propose(more) => {
                    jobs.extend(more);
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
                jobs: cancelled.into_iter().map(|j| (j.id, j.epoch, j.sampler)).collect(),
                secs: 0.0,
                steps: 0,
            });
        }
        if !jobs.is_empty() {
            batches.push(propose(drafter, jobs));
        }
        for b in batches {
            if tx.send(LaneEvent::Drafted(b)).is_err() {
                return;
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
    let mut samplers: Vec<Sampler> = jobs.iter().map(|j| j.sampler.clone()).collect();
    let t0 = Instant::now();
    let result = drafter.propose(&queries, &mut samplers);
    let secs = t0.elapsed().as_secs_f64();
    let steps = jobs.iter().map(|j| j.len).max().unwrap_or(1).max(1);
    Drafted {
        jobs: jobs.iter().zip(samplers).map(|(j, s)| (j.id, j.epoch, s)).collect(),
        result,
        secs,
        steps,
    }
}
