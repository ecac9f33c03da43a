//! The serving thread's side of the prefill lane's thread (`prefill_lane.rs`): plan a chunk
//! and send it while the lane is idle, apply the chunk that came back, and wait for it where
//! a request's blocks must go back while the lane may still be writing them.
use std::time::Duration;

use crossbeam_channel::{RecvError, Select, TryRecvError};
use vpd_sched::RequestState;

use super::prefill_lane::ChunkEntry;
use super::{internal, Runtime};
use crate::backend::{Backend, Pick};
use crate::error::Result;

const LANE_GONE: &str = "the prefill lane's thread has stopped";

impl<B: Backend> Runtime<'_, '_, B> {
    /// Plans the next prefill chunk (admitting waiting requests) and sends it to the prefill
    /// lane's thread, when there is one and it is idle. Returns whether anything changed.
    pub(super) fn dispatch_chunk(&mut self) -> Result<bool> {
        if self.prefill_lane.is_none() || !self.chunk_out.is_empty() || self.chunk_back.is_some() {
            return Ok(false);
        }
        if !self.prefill_ready() {
            return Ok(false);
        }
        let mut entries = self.plan_prefill()?;
        if entries.is_empty() {
            return Ok(false);
        }
        self.make_room(&mut entries)?;
        if entries.is_empty() {
            return Ok(true); // it preempted or aborted something
        }
        let (plan, _) = self.build_plan(&entries)?;
        // Confined while other requests draft or verify: those steps come first.
        let confine = self
            .reqs
            .iter()
            .any(|(_, r)| matches!(r.state, RequestState::Drafting | RequestState::Verifying));
        let draws = self
            .picks(&entries, &plan)
            .iter()
            .map(|p| match p {
                Pick::Draw { draw, .. } => Ok(Some(*draw)),
                Pick::Skip => Ok(None),
                Pick::Chain { .. } => Err(internal("a chain in a prefill chunk")),
            })
            .collect::<Result<Vec<_>>>()?;
        let job = super::prefill_lane::ChunkJob {
            want_logits: self.wants_logits(&entries),
            draws,
            plan,
            confine,
            entries: entries
                .iter()
                .map(|(id, w)| ChunkEntry { id: *id, epoch: self.reqs[*id].epoch, tokens: w.tokens() })
                .collect(),
        };
        let lane = self.prefill_lane.as_ref().ok_or_else(|| internal(LANE_GONE))?;
        lane.tx.send(job).map_err(|_| internal(LANE_GONE))?;
        self.chunk_out = entries.into_iter().map(|(id, _)| id).collect();
        Ok(true)
    }

    /// Applies the chunk back from the prefill lane, if one is. Rows of requests that lost
    /// their cache while it was out (their epoch moved) are dropped.
    pub(super) fn apply_chunk(&mut self) -> Result<bool> {
        if self.chunk_back.is_none() && !self.chunk_out.is_empty() {
            let lane = self.prefill_lane.as_ref().ok_or_else(|| internal(LANE_GONE))?;
            match lane.rx.try_recv() {
                Ok(done) => self.took_chunk(done),
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => return Err(internal(LANE_GONE)),
            }
        }
        let Some(done) = self.chunk_back.take() else {
            return Ok(false);
        };
        let (picked, logits) = done.rows?;
        let now = self.now_s();
        // The chunk shared the device with this thread's forwards and the decode lane's drafts.
        self.target_busy.record(now, done.secs);
        self.out.lane_steps[2] += 1;
        for (s, e) in done.entries.iter().enumerate() {
            let current = self
                .reqs
                .get_mut(e.id)
                .is_some_and(|r| r.epoch == e.epoch && r.state == RequestState::Prefilling);
            if current {
                let row = logits.as_ref().and_then(|l| l.last_row(s));
                self.apply_prefill(e.id, e.tokens, &picked[s], row, now)?;
            }
        }
        self.check_blocks()?;
        Ok(true)
    }

    /// Before request `id`'s blocks go back to the pool: if its chunk is still out, waits for
    /// it, since the prefill lane may be writing those blocks (the chunk is applied later).
    pub(super) fn await_chunk_of(&mut self, id: usize) -> Result<()> {
        if !self.chunk_out.contains(&id) {
            return Ok(());
        }
        let lane = self.prefill_lane.as_ref().ok_or_else(|| internal(LANE_GONE))?;
        let done = lane.rx.recv().map_err(|_: RecvError| internal(LANE_GONE))?;
        self.took_chunk(done);
        Ok(())
    }

    fn took_chunk(&mut self, done: super::prefill_lane::ChunkDone) {
        self.chunk_out.clear();
        self.chunk_back = Some(done);
    }

    /// Everything runnable is out on a lane thread: waits up to `timeout` for the decode lane's
    /// drafts or the prefill lane's chunk, whichever comes first, and takes it.
    pub(super) fn wait_for_lanes(&mut self, timeout: Duration) -> Result<()> {
        let chunk_out = !self.chunk_out.is_empty();
        let Some(prefill) = self.prefill_lane.as_ref().filter(|_| chunk_out) else {
            return self.collect_drafts(Some(timeout)).map(|_| ());
        };
        let drafts = self.lane.as_ref().filter(|_| self.drafts_in_flight > 0);
        let mut sel = Select::new();
        let chunk_op = sel.recv(&prefill.rx);
        if let Some(d) = drafts {
            sel.recv(&d.rx);
        }
        match sel.ready_timeout(timeout) {
            Ok(i) if i == chunk_op => self.apply_chunk().map(|_| ()),
            // A zero wait still reports a decode lane that has stopped.
            Ok(_) => self.collect_drafts(Some(Duration::ZERO)).map(|_| ()),
            Err(_) => Ok(()),
        }
    }
}
