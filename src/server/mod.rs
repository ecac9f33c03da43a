//! The OpenAI-compatible HTTP server (`vpd serve`), on `axum`/`tokio`. The async front end
//! only parses, tokenises, submits and streams: the engine runs on the runtime's own pinned
//! thread ([`crate::runtime::Service`]) and is reached only through its queues.
//!
//! Endpoints: `POST /v1/completions`, `POST /v1/chat/completions` (streaming and not),
//! `GET /v1/models`, `GET /health`, `GET /metrics` (Prometheus). Overload gets an immediate
//! 429; a client that disconnects from a stream cancels its request (its KV blocks are freed
//! between steps); SIGTERM or Ctrl-C stops admission (503), waits up to the drain timeout for
//! the admitted requests, then aborts the rest with an error event and exits.
mod error;
mod handlers;
mod json;
mod logprobs;
pub mod prometheus;
pub mod protocol;
pub mod text;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::{get, post};
use axum::Router;
use vpd_formats::tokenizer::Tokenizer;

pub use error::ApiError;
pub use protocol::ModelLimits;

use crate::error::{EngineError, Result};
use crate::runtime::Service;

/// What the handlers share.
pub struct AppState {
    pub service: Arc<Service>,
    pub tokenizer: Arc<Tokenizer>,
    pub model: ModelLimits,
    created: u64,
    next_id: AtomicU64,
    /// Seeds for requests that give none.
    seeds: AtomicU64,
}

impl AppState {
    pub fn new(service: Arc<Service>, tokenizer: Arc<Tokenizer>, model: ModelLimits) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            service,
            tokenizer,
            model,
            created: now,
            next_id: AtomicU64::new(1),
            seeds: AtomicU64::new(now.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        }
    }
}

/// The routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/completions", post(handlers::completions))
        .route("/v1/chat/completions", post(handlers::chat))
        .route("/v1/models", get(handlers::models))
        .route("/health", get(handlers::health))
        .route("/metrics", get(handlers::metrics))
        .with_state(state)
}

/// Serves on `addr` until SIGTERM or Ctrl-C, then drains for up to `drain` and aborts what
/// is left. `on_ready` gets the bound address (port 0 picks a free one).
///
/// # Errors
/// The address cannot be bound, or the server fails.
pub fn serve(
    state: Arc<AppState>,
    addr: SocketAddr,
    drain: Duration,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    let io = |e: std::io::Error| EngineError::Io {
        path: addr.to_string(),
        source: e,
    };
    // Two workers are plenty for parsing and streaming; the engine has its own thread.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io)?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(io)?;
        on_ready(listener.local_addr().map_err(io)?);
        let service = Arc::clone(&state.service);
        let app = router(state);
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown_signal().await;
                drain_then_stop(&service, drain).await;
            })
            .await
            .map_err(io)
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// Stops admitting, waits for the admitted requests up to `drain`, aborts the rest.
async fn drain_then_stop(service: &Arc<Service>, drain: Duration) {
    service.begin_drain();
    let t0 = Instant::now();
    tracing::info!(
        "shutting down: draining {} requests for up to {:.0} s",
        service.in_flight(),
        drain.as_secs_f64()
    );
    while service.in_flight() > 0 && t0.elapsed() < drain {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = service.in_flight();
    let why = format!(
        "server shutting down: the drain time of {:.0} s ran out",
        drain.as_secs_f64()
    );
    let service = Arc::clone(service);
    // Joining the serving thread blocks; keep it off the async workers.
    let _ = tokio::task::spawn_blocking(move || service.stop(&why)).await;
    if left > 0 {
        tracing::warn!("aborted {left} requests still running at the end of the drain");
    }
}
