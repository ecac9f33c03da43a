//! The runtime as a long-lived service, for the HTTP server: the serving loop runs on its own
//! host thread, pinned to a core (`core_affinity`; with fewer cores than threads it simply
//! shares), and owns the engine and the drafter. Front ends talk to it only through its
//! queues: [`Service::submit`] puts a request on the submission channel and returns the
//! request's event stream ([`super::events`]); dropping that stream cancels the request.
//!
//! Admission: at most `max_waiting` requests may wait to start prefilling; one more is refused
//! at once with [`SubmitError::Overloaded`] (the server's 429), so overload never grows an
//! unbounded queue. Shutdown: [`Service::begin_drain`] refuses new work,
//! [`Service::in_flight`] says when the admitted work is done, and [`Service::stop`] aborts
//! whatever is left with an explicit error and joins the thread.
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use super::events::{EventStream, EventSink};
use super::metrics::RuntimeMetrics;
use super::{Runtime, RuntimeConfig, Submission};
use crate::backend::Backend;
use crate::engine::{Engine, GenerateRequest};
use crate::error::{EngineError, Result};
use crate::spec::Drafter;

/// State shared between the serving thread and the front end.
#[derive(Debug)]
pub struct Shared {
    /// Submitted requests that have not started prefilling yet.
    pub(super) queued: AtomicUsize,
    /// Submitted requests that have not ended yet.
    pub(super) in_flight: AtomicUsize,
    draining: AtomicBool,
    /// Tells the loop to abort every live request with [`Self::abort_reason`].
    pub(super) abort_all: AtomicBool,
    reason: Mutex<String>,
    pub(super) metrics: Mutex<RuntimeMetrics>,
    /// Why the serving thread stopped, once it has.
    stopped: Mutex<Option<String>>,
}

impl Shared {
    pub(super) fn abort_reason(&self) -> String {
        self.reason
            .lock()
            .map_or_else(|_| "aborted".into(), |r| r.clone())
    }
}

/// Why a request was not accepted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubmitError {
    #[error("server overloaded: {waiting} requests are already waiting (limit {limit}); retry later")]
    Overloaded { waiting: usize, limit: usize },
    #[error("server is shutting down and admits no new requests")]
    ShuttingDown,
    #[error("the engine has stopped: {0}")]
    Stopped(String),
}

/// Service settings.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub runtime: RuntimeConfig,
    /// Requests that may wait to start prefilling before new ones get
    /// [`SubmitError::Overloaded`].
    pub max_waiting: usize,
}

/// A running serving loop.
pub struct Service {
    tx: Mutex<Option<mpsc::Sender<Submission>>>,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    start: Instant,
    max_waiting: usize,
}

/// What the serving thread builds before it serves: the target engine and the drafter.
pub type Parts<B> = (Engine<B>, Option<Box<dyn Drafter>>);

impl Service {
    /// Starts the serving thread. `build` runs on that thread (so backends need not be
    /// `Send`) and its error, if any, is returned here.
    ///
    /// # Errors
    /// An invalid configuration, or whatever `build` or the runtime's setup reports.
    pub fn spawn<B, F>(cfg: ServiceConfig, build: F) -> Result<Self>
    where
        B: Backend + 'static,
        F: FnOnce() -> Result<Parts<B>> + Send + 'static,
    {
        cfg.runtime.validate()?;
        if cfg.max_waiting == 0 {
            return Err(EngineError::InvalidRequest {
                field: "max_waiting",
                detail: "must be at least 1".into(),
            });
        }
        let shared = Arc::new(Shared {
            queued: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            abort_all: AtomicBool::new(false),
            reason: Mutex::new(String::new()),
            metrics: Mutex::new(RuntimeMetrics::new(cfg.runtime.num_draft)),
            stopped: Mutex::new(None),
        });
        let (tx, rx) = mpsc::channel::<Submission>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let start = Instant::now();
        let sh = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("vpd-lanes".into())
            .spawn(move || {
                pin_to_core(0, "serving");
                let result = serve_thread(&cfg.runtime, build, &sh, start, &rx, &ready_tx);
                let why = match result {
                    Ok(()) => "stopped".to_string(),
                    Err(e) => {
                        tracing::error!("serving loop stopped: {e}");
                        e.to_string()
                    }
                };
                if let Ok(mut s) = sh.stopped.lock() {
                    *s = Some(why);
                }
                // Requests still queued in `rx` are dropped with it: their streams close
                // without a final event, which the front end reports as `Stopped`.
            })
            .map_err(|e| EngineError::Backend(format!("cannot start the serving thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(EngineError::Backend("the serving thread died while starting".into()));
            }
        }
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            shared,
            thread: Mutex::new(Some(thread)),
            start,
            max_waiting: cfg.max_waiting,
        })
    }

    /// Queues `request`; its events arrive on the returned stream.
    ///
    /// # Errors
    /// Overload, shutdown, or a stopped engine.
    pub fn submit(&self, request: GenerateRequest) -> std::result::Result<EventStream, SubmitError> {
        self.submit_with_logprobs(request, None)
    }

    /// As [`Self::submit`]; with `Some(k)` every token event carries the sampled tokens'
    /// log-probabilities and `k` alternatives each.
    ///
    /// # Errors
    /// As [`Self::submit`].
    pub fn submit_with_logprobs(
        &self,
        request: GenerateRequest,
        logprobs: Option<usize>,
    ) -> std::result::Result<EventStream, SubmitError> {
        if let Some(why) = self.stopped() {
            return Err(SubmitError::Stopped(why));
        }
        if self.shared.draining.load(Ordering::Acquire) {
            return Err(SubmitError::ShuttingDown);
        }
        let waiting = self.shared.queued.fetch_add(1, Ordering::AcqRel);
        if waiting >= self.max_waiting {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(SubmitError::Overloaded {
                waiting,
                limit: self.max_waiting,
            });
        }
        let (sink, stream): (EventSink, EventStream) = tokio::sync::mpsc::unbounded_channel();
        let sub = Submission {
            request,
            send_s: self.start.elapsed().as_secs_f64(),
            sink: Some(sink),
            logprobs,
        };
        self.shared.in_flight.fetch_add(1, Ordering::AcqRel);
        let sent = self
            .tx
            .lock()
            .ok()
            .and_then(|tx| tx.as_ref().map(|tx| tx.send(sub).is_ok()));
        if sent != Some(true) {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(self.stopped().map_or(SubmitError::ShuttingDown, SubmitError::Stopped));
        }
        Ok(stream)
    }

    /// The latest metrics (published after every step).
    pub fn metrics(&self) -> RuntimeMetrics {
        self.shared
            .metrics
            .lock()
            .map_or_else(|p| p.into_inner().clone(), |m| m.clone())
    }

    /// Submitted requests that have not ended.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Acquire)
    }

    /// Why the serving thread stopped, if it has.
    pub fn stopped(&self) -> Option<String> {
        self.shared.stopped.lock().ok().and_then(|s| s.clone())
    }

    /// Refuses new requests from now on; admitted ones keep running.
    pub fn begin_drain(&self) {
        self.shared.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.shared.draining.load(Ordering::Acquire)
    }

    /// Aborts every live request with `why`, closes the queue and joins the thread.
    pub fn stop(&self, why: &str) {
        self.begin_drain();
        if let Ok(mut r) = self.shared.reason.lock() {
            *r = why.to_string();
        }
        self.shared.abort_all.store(true, Ordering::Release);
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop("server shutting down");
    }
}

fn serve_thread<B: Backend, F: FnOnce() -> Result<Parts<B>>>(
    cfg: &RuntimeConfig,
    build: F,
    shared: &Arc<Shared>,
    start: Instant,
    rx: &mpsc::Receiver<Submission>,
    ready: &mpsc::Sender<Result<()>>,
) -> Result<()> {
    let (mut engine, mut drafter) = match build() {
        Ok(p) => p,
        Err(e) => {
            let why = e.to_string();
            let _ = ready.send(Err(e));
            return Err(EngineError::Backend(why));
        }
    };
    let d = drafter.as_deref_mut().map(|d| d as &mut dyn Drafter);
    let rt = match Runtime::new(&mut engine, d, cfg) {
        Ok(rt) => rt.with_shared(Arc::clone(shared)),
        Err(e) => {
            let why = e.to_string();
            let _ = ready.send(Err(e));
            return Err(EngineError::Backend(why));
        }
    };
    let _ = ready.send(Ok(()));
    let mut rt = rt;
    rt.serve(start, rx, &mut || {}).map(|_| ())
}

/// Pins the calling thread to the core `from_last` places before the last one (wrapping
/// round when there are fewer cores than lane threads, which stays correct, only shared). The
/// CPU backend's worker pool spreads over every core anyway; on the GPU this keeps each
/// launching thread on a core of its own, off the OS's favourite core 0. Failing to pin is
/// harmless and only logged.
pub(crate) fn pin_to_core(from_last: usize, what: &str) {
    let ids = core_affinity::get_core_ids().unwrap_or_default();
    if ids.is_empty() {
        tracing::warn!("{what}: could not list the cores; not pinned");
        return;
    }
    let core = ids[ids.len() - 1 - from_last % ids.len()];
    if core_affinity::set_for_current(core) {
        tracing::info!("{what} thread pinned to core {}", core.id);
    } else {
        tracing::warn!("{what}: could not pin to core {}", core.id);
    }
}
