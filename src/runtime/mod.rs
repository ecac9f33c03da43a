//! The in-process serving loop: requests arrive over time through a channel, are admitted
//! against the KV cache, and run to completion under one of four scheduling [`Policy`]s, so
//! that the policies can be compared side by side on identical inputs (issue 5, item 6).
//!
//! - `nospec`: batched plain decoding with chunked prefill mixed into the same step
//!   (Sarathi-Serve, Agrawal et al. 2024).
//! - `single-lane`: one loop per step with a fixed draft length L: draft every running
//!   request, then one target forward that verifies every draft and carries the prefill chunks
//!   too, as vLLM schedules speculative decoding.
//! - `three-lane`: fixed L; decode (draft steps and plain steps), verify and prefill work sit
//!   in separate lane queues and each step runs the lane that vpd-sched's
//!   [`PrioritySelector`](vpd_sched::PrioritySelector) picks: Decode > Verify > Prefill, with
//!   anti-starvation bounds.
//! - `three-lane-adaptive`: the same, with vpd-sched's [`Controller`](vpd_sched::Controller)
//!   choosing each request's L in `0..=Lmax` from its acceptance and the load (TurboSpec
//!   goodput; ALGORITHMS.md, "Choosing L under load").
//!
//! **Threads.** Under the three-lane policies the decode lane's drafting runs on its own
//! pinned thread, which owns the drafter and its KV cache (`scheduler/draft_lane.rs`). The
//! target's plain decode steps and verification run on the serving thread, which is also the
//! verify lane's thread and owns the request table and the block manager. With
//! `RuntimeConfig::prefill_thread` the target's prefill chunks run on the prefill lane's own
//! thread, on a second executor over the same weights and KV cache
//! (`scheduler/prefill_lane.rs`, [`Backend::fork_executor`]); without it they stay on the
//! serving thread under strict priority Decode > Verify > Prefill with anti-starvation bounds.
//!
//! **What overlaps.** By default requests *gather*: a request back from verification waits
//! while others are still out drafting or queued for verification, and then the decode lane
//! drafts for all of them in one batch, so each round is one draft batch and one verify
//! forward. The lane picked decides when a target forward runs; the ready work of the other
//! target lane among decode and verify rides along in it (plain L = 0 steps ride in the verify
//! forward). What overlaps is the drafter's work with the serving thread's prefill chunks and
//! host work. The alternative, `RuntimeConfig::overlap_groups` (`vpd bench --overlap-groups`),
//! drafts for one group while another is verified (the asynchronous draft/verify of PEARL and
//! AMUSD). On one GPU it costs latency: at these batch sizes both the draft step and the
//! verify forward are bound by weight reads, so two groups pay each read twice, and running
//! them at once shares the same bandwidth (docs/perf.md, run H: p99 TPOT 1.5× that of
//! gathering at 2 req/s). On the GPU each backend has its own stream, and `vpd bench
//! --decode-sms N` puts the drafter in a green-context SM partition and the target on the rest
//! (docs/perf.md, run D, says why that partition does not pay yet). `nospec` and `single-lane`
//! run everything on the serving thread, as their designs say. In a server the serving thread
//! itself is pinned ([`service`]).
//!
//! Memory (issue 5, item 4): a waiting request is admitted to prefill only when its prompt fits
//! in the free blocks; when a step needs more blocks than are free, the newest running
//! requests are preempted by recompute (all requests have the same priority, so the lowest is
//! the newest) and go back to the front of the waiting queue with the tokens they already
//! emitted; when readmitted they re-prefill prompt and output. A request that could not fit in
//! the whole cache even alone is rejected at admission with an error. Every admitted request
//! therefore ends finished or with an explicit error, and the block manager's invariants are
//! checked after every step.
pub mod events;
pub mod metrics;
mod scheduler;
pub mod service;
mod state;

use std::fmt;
use std::str::FromStr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vpd_bench::metrics::{ControllerSummary, LoopTime, RequestRecord};
use vpd_bench::synthetic::SyntheticAcceptance;
use vpd_sched::{ControllerConfig, CostPrior, StarvationBounds};

use self::metrics::RuntimeMetrics;
use crate::backend::Backend;
use crate::engine::{Engine, FinishReason, GenerateRequest};
use crate::error::{EngineError, Result};
use crate::spec::{Drafter, MAX_DRAFT_LEN};

pub use scheduler::Runtime;
pub use service::{Service, ServiceConfig, SubmitError};

/// How the runtime schedules work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    NoSpec,
    SingleLane,
    ThreeLane,
    ThreeLaneAdaptive,
}

impl Policy {
    pub const ALL: [Policy; 4] = [
        Policy::NoSpec,
        Policy::SingleLane,
        Policy::ThreeLane,
        Policy::ThreeLaneAdaptive,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::NoSpec => "nospec",
            Self::SingleLane => "single-lane",
            Self::ThreeLane => "three-lane",
            Self::ThreeLaneAdaptive => "three-lane-adaptive",
        }
    }

    /// Whether the policy drafts (and so needs a drafter and L ≥ 1).
    pub fn speculates(self) -> bool {
        self != Self::NoSpec
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Policy {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|p| p.name() == s.trim()).ok_or_else(|| EngineError::InvalidRequest {
            field: "policy",
            detail: format!("unknown policy `{s}`; use one of nospec, single-lane, three-lane, three-lane-adaptive"),
        })
    }
}

/// Runtime settings.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub policy: Policy,
    /// L for the fixed-L policies; Lmax for `three-lane-adaptive`.
    pub num_draft: usize,
    /// Prompt tokens per step, over all prefilling requests.
    pub prefill_budget: usize,
    /// Requests holding KV blocks at once.
    pub max_running: usize,
    pub starvation: StarvationBounds,
    /// Controller settings for `three-lane-adaptive` (`l_max` and `speculation` are set from
    /// `num_draft` and the policy).
    pub controller: ControllerConfig,
    pub cost_prior: CostPrior,
    /// Replace accept/reject outcomes by this labelled process (all compute still runs).
    pub synthetic: Option<SyntheticAcceptance>,
    /// Seed of the synthetic process.
    pub seed: u64,
    /// Three-lane policies: let the decode lane draft for requests as soon as they return from
    /// verification, while other requests are still out drafting or waiting to be verified
    /// (groups that overlap draft and verify). Off by default: requests then gather, and the
    /// decode lane drafts every drafting request in one batch once the others are back, one
    /// round at a time (docs/perf.md, run H, says why).
    pub overlap_groups: bool,
    /// Three-lane policies: run the target's prefill chunks on the prefill lane's own thread,
    /// on a second executor of the target ([`Backend::fork_executor`]; on the GPU its own
    /// stream at the lowest priority), beside the serving thread's verify forwards instead of
    /// between them. Off by default here; `vpd bench` and `vpd serve` turn it on with
    /// `--backend cuda`. On the CPU the executors share one locked cache and take turns.
    pub prefill_thread: bool,
    /// Three-lane policies without the prefill thread: up to this many prompt tokens (and at
    /// most `prefill_budget`) ride in each decode or verify forward, as single-lane mixes its
    /// chunks into its verify forward. While drafts are out the prefill waits for that forward
    /// instead of running one of its own beside them: a forward of its own reads all the
    /// target's weights again and shares the bandwidth with the drafts. 0: prefill runs only in
    /// forwards of its own, when the prefill lane is picked.
    pub prefill_ride: usize,
    /// Three-lane policies, gathering: a request at L = 0 takes a plain step in a target
    /// forward of its own while the round's drafts run, and another in the round's verify
    /// forward, two tokens a round instead of one; `three-lane-adaptive`'s controller knows
    /// (`ControllerConfig::plain_beside`) and parks low-acceptance requests at L = 0 where that
    /// forward fits in the drafts' time. Off by default.
    pub plain_beside_drafts: bool,
    /// Bring every step's logits rows to the host and choose the tokens there (the same
    /// arithmetic, so the same tokens), instead of on the backend: the path requests that
    /// report logprobs take, kept as a switch to measure what choosing on the device saves.
    pub pick_on_host: bool,
}

impl RuntimeConfig {
    pub fn new(policy: Policy, num_draft: usize) -> Self {
        Self {
            policy,
            num_draft,
            prefill_budget: 256,
            max_running: 32,
            starvation: StarvationBounds::default(),
            controller: ControllerConfig::default(),
            cost_prior: CostPrior::default(),
            synthetic: None,
            seed: 0,
            overlap_groups: false,
            prefill_thread: false,
            prefill_ride: 0,
            plain_beside_drafts: false,
            pick_on_host: false,
        }
    }

    /// # Errors
    /// L of 0 (or over [`MAX_DRAFT_LEN`]) with a speculating policy, a zero prefill budget or
    /// running limit.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, detail: String| Err(EngineError::InvalidRequest { field, detail });
        if self.policy.speculates() && self.num_draft == 0 {
            return bad(
                "num_draft",
                format!(
                    "Lmax is 0 but policy {} speculates; use L >= 1 or policy nospec",
                    self.policy
                ),
            );
        }
        if self.policy.speculates() && self.num_draft > MAX_DRAFT_LEN {
            return bad(
                "num_draft",
                format!(
                    "{} is over the maximum draft length {MAX_DRAFT_LEN}",
                    self.num_draft
                ),
            );
        }
        if self.prefill_budget == 0 {
            return bad("prefill_budget", "must be at least 1 token".into());
        }
        if self.max_running == 0 {
            return bad("max_running", "must be at least 1".into());
        }
        if self.prefill_ride > 0 && self.prefill_thread {
            return bad(
                "prefill_ride",
                "prefill chunks either ride in verify forwards or run on the prefill lane's thread, \
                 not both: turn the prefill thread off (--prefill-thread false)"
                    .into(),
            );
        }
        if self.plain_beside_drafts && self.overlap_groups {
            return bad(
                "plain_beside_drafts",
                "plain steps beside the drafts need gathered rounds: drop --overlap-groups".into(),
            );
        }
        Ok(())
    }
}

/// One request as the client sends it.
#[derive(Debug, Clone)]
pub struct Submission {
    pub request: GenerateRequest,
    /// Seconds after the run's start at which it was sent.
    pub send_s: f64,
    /// Where its events go (served requests); `None` in the in-process benchmark.
    pub sink: Option<events::EventSink>,
    /// Log-probabilities wanted: `Some(k)` for the sampled token and `k` alternatives.
    pub logprobs: Option<usize>,
}

/// How one request ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Generated tokens (for an aborted request, those streamed before the error).
    pub tokens: Vec<u32>,
    /// `Ok` with the finish reason, or the error that aborted the request.
    pub result: std::result::Result<FinishReason, String>,
    /// Times it was preempted and recomputed.
    pub preemptions: u32,
}

/// Everything a run produced, indexed by submission order.
#[derive(Debug, Clone, Default)]
pub struct RunOutput {
    pub outcomes: Vec<Outcome>,
    pub records: Vec<RequestRecord>,
    /// The counters at the end of the run (drafted, accepted, the L histogram, preemptions,
    /// latency histograms): the same numbers the server publishes.
    pub metrics: RuntimeMetrics,
    /// Lane steps run: decode (draft or plain), verify, prefill (mixed steps count once each
    /// in every lane they carried work for).
    pub lane_steps: [u64; 3],
    /// Wall time from the start to the last request's end.
    pub duration_s: f64,
    /// The controller's view of the run (`three-lane-adaptive`).
    pub controller: Option<ControllerSummary>,
    /// Where the serving thread's time went.
    pub loop_time: LoopTime,
}

/// Runs `requests` through a fresh serving loop: a client thread sends request `i` at
/// `send_times[i]` seconds after the start over a channel, the loop serves them, and
/// `on_done` is called once per request that ends.
///
/// # Errors
/// An invalid configuration, a missing drafter for a speculating policy, or a backend
/// failure (request-level problems abort only that request).
pub fn run_workload<B: Backend>(
    engine: &mut Engine<B>,
    drafter: Option<&mut dyn Drafter>,
    cfg: &RuntimeConfig,
    requests: Vec<GenerateRequest>,
    send_times: &[f64],
    on_done: &mut dyn FnMut(),
) -> Result<RunOutput> {
    if requests.len() != send_times.len() {
        return Err(EngineError::InvalidRequest {
            field: "send_times",
            detail: format!(
                "{} requests but {} send times",
                requests.len(),
                send_times.len()
            ),
        });
    }
    let mut rt = Runtime::new(engine, drafter, cfg)?;
    let start = Instant::now();
    let (tx, rx) = mpsc::channel::<Submission>();
    std::thread::scope(|s| {
        let times = send_times.to_vec();
        s.spawn(move || {
            for (request, t) in requests.into_iter().zip(times) {
                let wait = Duration::from_secs_f64(t.max(0.0)).saturating_sub(start.elapsed());
                std::thread::sleep(wait);
                let send_s = start.elapsed().as_secs_f64();
                // The loop only drops the receiver after the sender is gone.
                if tx.send(Submission {
                    request,
                    send_s,
                    sink: None,
                    logprobs: None,
                }).is_err() {
                    return;
                }
            }
        });
        rt.serve(start, &rx, on_done)
    })
}
