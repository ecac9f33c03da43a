//! What the runtime tells the client of a served request, in order: zero or more `Tokens`
//! chunks (one per step that emitted tokens; a verify step can emit several accepted tokens
//! at once), then exactly one `Finished` or `Failed`. A client that drops its receiver
//! cancels the request: the runtime notices between steps, aborts it and frees its KV blocks.
use crate::engine::FinishReason;

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Tokens emitted by one step.
    Tokens(Vec<u32>),
    /// The request finished normally.
    Finished {
        reason: FinishReason,
        prompt_tokens: usize,
        output_tokens: usize,
    },
    /// The request ended with this error (tokens already sent stay valid).
    Failed(String),
    /// The runtime refused the request at admission (the request's fault: too long for
    /// the cache, out-of-vocabulary ids, bad parameters).
    Rejected(String),
}

/// The runtime's end of a request's event stream. Unbounded: the runtime thread must never
/// block on a slow client; a client's backlog is bounded by its `max_tokens`.
pub type EventSink = tokio::sync::mpsc::UnboundedSender<Event>;

/// The client's end.
pub type EventStream = tokio::sync::mpsc::UnboundedReceiver<Event>;
