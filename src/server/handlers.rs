//! The HTTP endpoints. Completions and chat share one path: read and check the request
//! ([`super::protocol`]), submit one engine request per choice, then either collect the
//! choices into one response or stream them as server-sent events in OpenAI's chunk shapes.
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, BoxStream, SelectAll, StreamExt};
use serde_json::{json, Value};

use super::error::ApiError;
use super::protocol::{parse_body, Endpoint, Job};
use super::logprobs;
use super::text::{Choice, Piece};
use crate::runtime::events::TokenLogprob;
use vpd_formats::tokenizer::Tokenizer;
use super::AppState;
use crate::engine::GenerateRequest;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub async fn completions(State(app): State<Arc<AppState>>, body: Bytes) -> Response {
    generate(app, Endpoint::Completions, &body).await
}

pub async fn chat(State(app): State<Arc<AppState>>, body: Bytes) -> Response {
    generate(app, Endpoint::Chat, &body).await
}

pub async fn models(State(app): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{
            "id": app.model.name,
            "object": "model",
            "created": app.created,
            "owned_by": "verify-pd",
            "max_model_len": app.model.context,
        }],
    }))
}

pub async fn health(State(app): State<Arc<AppState>>) -> Response {
    if let Some(why) = app.service.stopped() {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("engine stopped: {why}")).into_response();
    }
    if app.service.is_draining() {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    StatusCode::OK.into_response()
}

pub async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    let text = super::prometheus::render(&app.service.metrics(), &app.model.name, app.service.is_draining());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

async fn generate(app: Arc<AppState>, endpoint: Endpoint, body: &[u8]) -> Response {
    let job = match parse_body(endpoint, body, &app.tokenizer, &app.model) {
        Ok(j) => j,
        Err(e) => return e.into_response(),
    };
    let fallback_seed = app.seeds.fetch_add(MAX_SEEDS_PER_REQUEST, Ordering::Relaxed);
    let mut choices = Vec::with_capacity(job.n);
    for i in 0..job.n {
        let mut sampling = job.sampling;
        sampling.seed = job.seed_for(i, fallback_seed);
        let request = GenerateRequest {
            prompt_ids: job.prompt_ids.clone(),
            max_new_tokens: job.max_tokens,
            sampling,
            ignore_eos: job.ignore_eos,
        };
        // An error drops the choices already submitted, which cancels them.
        match app.service.submit_with_logprobs(request, job.logprobs) {
            Ok(events) => choices.push(Choice::new(i, events, Arc::clone(&app.tokenizer), job.stop.clone())),
            Err(e) => return ApiError::from(e).into_response(),
        }
    }
    let meta = Meta {
        id: format!(
            "{}-{:x}",
            if endpoint == Endpoint::Chat { "chatcmpl" } else { "cmpl" },
            app.next_id.fetch_add(1, Ordering::Relaxed)
        ),
        created: unix_now(),
        model: app.model.name.clone(),
        endpoint,
        prompt_tokens: job.prompt_ids.len(),
        tokenizer: Arc::clone(&app.tokenizer),
        logprobs: job.logprobs.is_some(),
    };
    if job.stream {
        stream_response(meta, &job, choices)
    } else {
        collect_response(meta, choices).await
    }
}

/// Seeds reserved per request when it gives none (one per choice).
const MAX_SEEDS_PER_REQUEST: u64 = super::protocol::MAX_N as u64;

struct Meta {
    id: String,
    created: u64,
    model: String,
    endpoint: Endpoint,
    prompt_tokens: usize,
    tokenizer: Arc<Tokenizer>,
    /// Whether the request asked for log-probabilities.
    logprobs: bool,
}

impl Meta {
    /// The `logprobs` field of a choice: null unless asked for. `offset` is the completions
    /// shape's text offset of the first token, advanced past these.
    fn logprobs_json(&self, lps: &[TokenLogprob], offset: &mut usize) -> Value {
        match (self.logprobs, self.endpoint) {
            (false, _) => Value::Null,
            (true, Endpoint::Completions) => logprobs::completion(&self.tokenizer, lps, offset),
            (true, Endpoint::Chat) => logprobs::chat(&self.tokenizer, lps),
        }
    }

    fn usage(&self, completion: usize) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        })
    }

    fn chunk(&self, choices: Value, usage: Option<Value>) -> Value {
        let object = match self.endpoint {
            Endpoint::Completions => "text_completion",
            Endpoint::Chat => "chat.completion.chunk",
        };
        let mut v = json!({"id": self.id, "object": object, "created": self.created, "model": self.model, "choices": choices});
        if let Some(u) = usage {
            v["usage"] = u;
        }
        v
    }

    fn choice_chunk(&self, index: usize, text: &str, finish: Option<&str>, logprobs: Value) -> Value {
        match self.endpoint {
            Endpoint::Completions => json!({"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}),
            Endpoint::Chat => json!({"index": index, "delta": {"content": text}, "logprobs": logprobs, "finish_reason": finish}),
        }
    }
}

fn error_of(message: String, client_fault: bool) -> ApiError {
    let status = if client_fault { StatusCode::BAD_REQUEST } else { StatusCode::INTERNAL_SERVER_ERROR };
    ApiError::new(status, message)
}

async fn collect_response(meta: Meta, choices: Vec<Choice>) -> Response {
    let mut out = Vec::with_capacity(choices.len());
    let mut completion = 0;
    for mut c in choices {
        let mut text = String::new();
        let mut lps = Vec::new();
        let reason = loop {
            match c.next().await {
                Some(Piece::Text { text: t, logprobs }) => {
                    text.push_str(&t);
                    lps.extend(logprobs);
                }
                Some(Piece::End { text: t, reason, logprobs }) => {
                    text.push_str(&t);
                    lps.extend(logprobs);
                    break reason;
                }
                Some(Piece::Error { message, client_fault }) => return error_of(message, client_fault).into_response(),
                None => return error_of("the choice ended without a result".into(), false).into_response(),
            }
        };
        completion += c.tokens;
        let logprobs = meta.logprobs_json(&lps, &mut 0);
        out.push(match meta.endpoint {
            Endpoint::Completions => json!({"index": c.index, "text": text, "logprobs": logprobs, "finish_reason": reason}),
            Endpoint::Chat => json!({
                "index": c.index,
                "message": {"role": "assistant", "content": text},
                "logprobs": logprobs,
                "finish_reason": reason,
            }),
        });
    }
    let object = match meta.endpoint {
        Endpoint::Completions => "text_completion",
        Endpoint::Chat => "chat.completion",
    };
    Json(json!({
        "id": meta.id,
        "object": object,
        "created": meta.created,
        "model": meta.model,
        "choices": out,
        "usage": meta.usage(completion),
    }))
    .into_response()
}

/// The streaming state: every choice's pieces merged as they come.
struct Streaming {
    meta: Meta,
    pieces: SelectAll<BoxStream<'static, (usize, Piece, usize)>>,
    tokens: Vec<usize>,
    /// Per choice: the completions-shape text offset of its next token.
    offsets: Vec<usize>,
    include_usage: bool,
    continuous_usage: bool,
    finished: bool,
}

fn stream_response(meta: Meta, job: &Job, choices: Vec<Choice>) -> Response {
    let n = choices.len();
    let mut first = Vec::new();
    if meta.endpoint == Endpoint::Chat {
        // OpenAI's first chat chunk per choice carries the role.
        for i in 0..n {
            let c = json!({"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null});
            first.push(data(&meta.chunk(json!([c]), None)));
        }
    }
    let pieces = stream::select_all(choices.into_iter().map(|c| {
        stream::unfold(c, |mut c| async move {
            let p = c.next().await?;
            let tokens = c.tokens;
            Some(((c.index, p, tokens), c))
        })
        .boxed()
    }));
    let state = Streaming {
        meta,
        pieces,
        tokens: vec![0; n],
        offsets: vec![0; n],
        include_usage: job.include_usage,
        continuous_usage: job.continuous_usage,
        finished: false,
    };
    let body = stream::iter(first).chain(
        stream::unfold(state, |mut s| async move {
            if s.finished {
                return None;
            }
            let events = match s.pieces.next().await {
                Some((i, piece, tokens)) => s.on_piece(i, piece, tokens),
                None => {
                    s.finished = true;
                    s.on_end()
                }
            };
            Some((stream::iter(events), s))
        })
        .flatten(),
    );
    Sse::new(body.map(Ok::<_, Infallible>))
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn data(v: &Value) -> SseEvent {
    SseEvent::default().data(v.to_string())
}

impl Streaming {
    fn usage_now(&self) -> Option<Value> {
        self.continuous_usage.then(|| self.meta.usage(self.tokens.iter().sum()))
    }

    fn on_piece(&mut self, i: usize, piece: Piece, tokens: usize) -> Vec<SseEvent> {
        self.tokens[i] = tokens;
        let (text, finish, lps) = match piece {
            Piece::Text { text, logprobs } => (text, None, logprobs),
            Piece::End { text, reason, logprobs } => (text, Some(reason), logprobs),
            Piece::Error { message, client_fault } => {
                // The stream has started (status 200): the error goes in the stream, then it ends.
                self.finished = true;
                let err = error_of(message, client_fault);
                return vec![data(&err.body()), SseEvent::default().data("[DONE]")];
            }
        };
        let logprobs = self.meta.logprobs_json(&lps, &mut self.offsets[i]);
        let c = self.meta.choice_chunk(i, &text, finish, logprobs);
        vec![data(&self.meta.chunk(json!([c]), self.usage_now()))]
    }

    fn on_end(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if self.include_usage {
            out.push(data(&self.meta.chunk(json!([]), Some(self.meta.usage(self.tokens.iter().sum())))));
        }
        out.push(SseEvent::default().data("[DONE]"));
        out
    }
}
