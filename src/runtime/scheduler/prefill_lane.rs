//! The prefill lane's thread, for the three-lane policies (issue 5, item 1).
//!
//! The target's prefill chunks run here, on a second executor of the target model
//! ([`Backend::fork_executor`]: the same weights and paged KV cache, its own scratch buffers
//! and, on the GPU, its own stream at the lowest priority). Before, a chunk ran on the serving
//! thread, and a verify forward that became ready behind it waited for the whole chunk (run H
//! took that for most of the three-lane policies' tail; measured on 2026-12-03 it was not, on
//! ShareGPT's short prompts, and it was, on long ones: docs/perf.md, "Lane threads"). Now the
//! serving thread plans a chunk (admission, blocks, the plan), sends it here, and goes on
//! verifying; the chunk's rows come back and are applied between its own steps.
//!
//! One chunk is out at a time, and while it is out its requests belong to this lane: the
//! serving thread neither plans for them nor frees their blocks. A request that must lose its
//! cache meanwhile (preemption, abort) first waits for the chunk to come back, because the
//! executor may still be writing its slots; the rows of a request whose cache epoch moved are
//! then dropped. Every executor call returns only once its cache writes are done, so the
//! hand-back is also the point after which the verify lane may read them.
//!
//! While the decode and verify lanes have work, a chunk runs confined to the executor's small
//! SM partition where it has one ([`Backend::confine`]; `vpd bench --prefill-sms`), so that its
//! GEMMs cannot hold every SM under a draft step; with nothing else to run it takes the whole
//! device. That is the partition resized between steps as the load changes.
//!
//! On the CPU the two executors share one locked cache and take turns; the thread structure
//! and its hand-offs are the same, which is what the CPU tests check.
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use crate::backend::{forward_picks, Backend, Logits, Pick, Picked, RowDraw, StepPlan};
use crate::error::Result;

/// One request's share of a chunk.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChunkEntry {
    pub id: usize,
    /// The request's cache epoch at dispatch: rows for an older epoch are dropped.
    pub epoch: u64,
    /// Prompt tokens of this request in the chunk.
    pub tokens: usize,
}

/// A planned chunk: the step and who it is for, in plan order.
pub(crate) struct ChunkJob {
    pub plan: StepPlan,
    pub entries: Vec<ChunkEntry>,
    /// Per plan sequence: the draw from the prompt's last row, or `None` (an inner chunk).
    pub draws: Vec<Option<RowDraw>>,
    /// A request in it reports logprobs: the logits rows come back too.
    pub want_logits: bool,
    /// The decode and verify lanes have work: run on the executor's small SM partition
    /// ([`Backend::confine`]) rather than the whole device.
    pub confine: bool,
}

/// A finished chunk.
pub(crate) struct ChunkDone {
    pub entries: Vec<ChunkEntry>,
    /// Per plan sequence what its draw gave, and the logits rows where asked for.
    pub rows: Result<(Vec<Picked>, Option<Logits>)>,
    /// Wall time of the forward.
    pub secs: f64,
}

/// The serving thread's ends of the two queues (one chunk is out at a time, so one slot each).
pub(crate) struct PrefillHandle {
    pub tx: Sender<ChunkJob>,
    pub rx: Receiver<ChunkDone>,
}

pub(crate) fn queues() -> (PrefillHandle, Receiver<ChunkJob>, Sender<ChunkDone>) {
    let (tx, rx_worker) = crossbeam_channel::bounded(1);
    let (tx_worker, rx) = crossbeam_channel::bounded(1);
    (PrefillHandle { tx, rx }, rx_worker, tx_worker)
}

/// The thread's loop: runs each chunk through every layer of `executor` until the serving
/// thread drops its sender.
pub(crate) fn run(executor: &mut dyn Backend, rx: &Receiver<ChunkJob>, tx: &Sender<ChunkDone>) {
    super::super::service::pin_to_core(2, "prefill lane");
    let layers = executor.config().num_hidden_layers;
    for job in rx {
        let t0 = Instant::now();
        let picks: Vec<Pick<'_>> = job
            .draws
            .iter()
            .map(|d| d.map_or(Pick::Skip, |draw| Pick::Draw { draw, keep: false }))
            .collect();
        let rows = executor
            .confine(job.confine)
            .and_then(|()| forward_picks(executor, &job.plan, layers, &picks, job.want_logits));
        let done = ChunkDone { entries: job.entries, rows, secs: t0.elapsed().as_secs_f64() };
        if tx.send(done).is_err() {
            return; // the serving thread has gone
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::cpu::CpuBackend;
    use crate::backend::{LogitsWanted, SeqStep};
    use crate::make_model::{write_random_checkpoint, Preset, WeightDType};
    use crate::model::Model;

    /// A chunk run on the forked executor writes the same cache the original reads: the next
    /// decode step on the original gives the logits of running everything there.
    #[test]
    fn smoke_a_chunk_on_the_fork_feeds_the_original_executor() {
        let dir = tempfile::tempdir().unwrap();
        write_random_checkpoint(&Preset::TinyLlama3.config(), WeightDType::F32, 3, dir.path(), None, &mut |_, _| {})
            .unwrap();
        let m = Model::load(dir.path()).unwrap();
        let prompt: Vec<u32> = (1..12).collect();
        let chunk = |tokens: Vec<u32>, start_pos, logits| StepPlan {
            seqs: vec![SeqStep { tokens, start_pos, block_table: vec![0, 1], tree_parents: None, logits }],
        };
        let mut alone = CpuBackend::new(m.config.clone(), Arc::clone(&m.weights), 4, 8).unwrap();
        alone.forward(&chunk(prompt.clone(), 0, LogitsWanted::None)).unwrap();
        let want = alone.forward(&chunk(vec![5], prompt.len(), LogitsWanted::Last)).unwrap();

        let mut main = CpuBackend::new(m.config.clone(), Arc::clone(&m.weights), 4, 8).unwrap();
        let mut fork = main.fork_executor().unwrap().expect("the CPU backend forks");
        let (handle, jobs, done) = queues();
        std::thread::scope(|s| {
            s.spawn(move || run(fork.as_mut(), &jobs, &done));
            let job = ChunkJob {
                plan: chunk(prompt.clone(), 0, LogitsWanted::None),
                entries: vec![ChunkEntry { id: 0, epoch: 0, tokens: prompt.len() }],
                draws: vec![None],
                want_logits: false,
                confine: true,
            };
            handle.tx.send(job).unwrap();
            let back = handle.rx.recv().unwrap();
            assert_eq!(back.entries[0].tokens, prompt.len());
            assert!(back.rows.is_ok());
            drop(handle);
        });
        let got = main.forward(&chunk(vec![5], prompt.len(), LogitsWanted::Last)).unwrap();
        assert_eq!(got.data, want.data);
    }
}
