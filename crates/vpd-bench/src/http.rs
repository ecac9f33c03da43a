//! The HTTP load client of `vpd bench --url`: sends a workload to any OpenAI-compatible server
//! as streaming `POST /v1/completions` requests and records what a client sees, with the
//! metric definitions of vLLM's `benchmarks/benchmark_serving.py`:
//!
//! - each request goes out at its send time (seconds from the start, from
//!   [`workload::arrival_times`](crate::workload::arrival_times)); with a concurrency cap it
//!   then also waits for a free slot, and its send time is when it actually went out, as
//!   vLLM's semaphore does;
//! - TTFT is the first event with non-empty text, ITL the gaps between such events, E2E ends
//!   at the last of them (vLLM's `latency = most_recent_timestamp - st`); see
//!   [`events`] for tokens per chunk and the output length;
//! - a request fails, with a message in [`RequestRecord::error`], on a connection failure, an
//!   HTTP error status (status and the server's error message), malformed stream data, an
//!   error event, a stream that ends before `data: [DONE]`, or one with no text at all.
//!
//! Requests carry `temperature: 0` unless told otherwise (vLLM's benchmark sends greedy
//! requests too). The client
//! has no TLS: it is meant for servers on loopback or on machines the user runs.

mod events;
mod sse;

use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use reqwest::Url;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::metrics::RequestRecord;
use events::{error_message, quote, StreamState};
pub use sse::{SseError, SseReader};

/// A prompt as text (the server tokenizes it) or as token ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    Text(String),
    Tokens(Vec<u32>),
}

/// One request of the workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub prompt: Prompt,
    /// The prompt's length by the client's tokenizer: what the input-token totals count, as
    /// in vLLM's benchmark.
    pub prompt_tokens: usize,
    pub max_tokens: usize,
    /// Sent as the (vLLM extension) `ignore_eos` field when set.
    pub ignore_eos: Option<bool>,
}

/// Where and how to send.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The API root from [`parse_base_url`], e.g. `http://127.0.0.1:8000/v1`.
    pub api: Url,
    /// The `model` field of every request.
    pub model: String,
    /// Requests in flight at once; `None`: no cap.
    pub max_concurrency: Option<usize>,
    /// Fails a request still unfinished this long after it went out; `None`: no limit.
    pub request_timeout: Option<Duration>,
    /// Sampling parameters of every request (default greedy, as vLLM's benchmark sends).
    pub sampling: RequestSampling,
}

/// The sampling fields every request carries: `temperature` always, `top_p` below 1 and
/// `top_k` above 0 (vLLM's extension, which `vpd serve` takes too).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestSampling {
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: usize,
}

impl Default for RequestSampling {
    fn default() -> Self {
        Self { temperature: 0.0, top_p: 1.0, top_k: 0 }
    }
}

/// The records of a run, in request order, and its duration: from the start until the last
/// request finished (vLLM's `benchmark_duration`).
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRun {
    pub records: Vec<RequestRecord>,
    pub duration_s: f64,
}

/// The latest send time accepted (about 31 years): far beyond any run, and it keeps the
/// deadline arithmetic clear of overflow.
pub const MAX_SEND_S: f64 = 1e9;

/// A run that could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpBenchError {
    #[error("--url `{url}`: {detail}")]
    BadUrl { url: String, detail: String },
    #[error("{requests} requests but {times} send times")]
    LengthMismatch { requests: usize, times: usize },
    #[error("send time {0} is not a number of seconds in [0, {MAX_SEND_S}]")]
    BadSendTime(f64),
    #[error("max_concurrency must be ≥ 1")]
    ZeroConcurrency,
    #[error("HTTP client: {0}")]
    Client(String),
    #[error("{url}: {detail}")]
    Models { url: String, detail: String },
}

/// Checks a `--url` and returns the API root the endpoints hang off: `http://HOST[:PORT]`
/// gets `/v1` appended; a URL already ending in `/v1` (or `/v1/completions`) is kept.
///
/// # Errors
/// [`HttpBenchError::BadUrl`] naming what is wrong: not `http://` (no TLS here), no host,
/// credentials, a query or a fragment, or unparseable.
pub fn parse_base_url(s: &str) -> Result<Url, HttpBenchError> {
    let bad = |detail: &str| HttpBenchError::BadUrl {
        url: s.to_owned(),
        detail: detail.to_owned(),
    };
    let lower = s.to_ascii_lowercase();
    if lower.starts_with("https://") {
        return Err(bad("only http:// is supported: this client has no TLS (run it against a server on loopback or your own network)"));
    }
    if !lower.starts_with("http://") {
        return Err(bad("must start with http://, e.g. http://127.0.0.1:8000"));
    }
    let mut url = Url::parse(s).map_err(|e| bad(&e.to_string()))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("credentials in the URL are not supported"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad(
            "a query or fragment has no meaning here; give the server's base URL",
        ));
    }
    let path = url.path().trim_end_matches('/');
    let path = path
        .strip_suffix("/completions")
        .filter(|p| p.ends_with("/v1"))
        .unwrap_or(path);
    let root = if path.ends_with("/v1") {
        path.to_owned()
    } else {
        format!("{path}/v1")
    };
    url.set_path(&root);
    Ok(url)
}

/// `root` + `/name`, for a root from [`parse_base_url`].
fn endpoint(root: &Url, name: &str) -> Url {
    let mut u = root.clone();
    u.set_path(&format!("{}/{name}", root.path().trim_end_matches('/')));
    u
}

fn client() -> Result<reqwest::Client, HttpBenchError> {
    reqwest::Client::builder()
        // A benchmark measures the server, not a proxy that the environment happens to name.
        .no_proxy()
        .build()
        .map_err(|e| HttpBenchError::Client(chain(&e)))
}

/// An error with its sources: reqwest's own message alone ("error sending request") hides
/// the cause (refused, reset, timed out).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = c.source();
    }
    s
}

/// One entry of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedModel {
    pub id: String,
    /// The context the server allows (vLLM's and Verify-PD's `max_model_len`), when it says.
    pub max_model_len: Option<usize>,
}

/// The models the server lists at `GET /v1/models`: to name the model when the user did not,
/// and to keep prompts within its context.
///
/// # Errors
/// [`HttpBenchError::Models`] when the server cannot be reached or answers with an error or
/// something that is not a model list.
pub async fn served_models(api: &Url, timeout: Duration) -> Result<Vec<ServedModel>, HttpBenchError> {
    let url = endpoint(api, "models");
    let err = |detail: String| HttpBenchError::Models {
        url: url.to_string(),
        detail,
    };
    let resp = client()?
        .get(url.clone())
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| err(chain(&e)))?;
    let status = resp.status();
    let body = resp.text().await.map_err(|e| err(chain(&e)))?;
    if !status.is_success() {
        return Err(err(status_error(status, &body)));
    }
    let v: Value = serde_json::from_str(&body)
        .map_err(|e| err(format!("not JSON ({e}): {}", quote(&body))))?;
    let ids = v
        .get("data")
        .and_then(Value::as_array)
        .map(|d| {
            d.iter()
                .filter_map(|m| {
                    Some(ServedModel {
                        id: m.get("id")?.as_str()?.to_owned(),
                        max_model_len: m.get("max_model_len").and_then(Value::as_u64).and_then(|n| usize::try_from(n).ok()),
                    })
                })
                .collect::<Vec<_>>()
        })
        .ok_or_else(|| err(format!("no `data` list of models: {}", quote(&body))))?;
    Ok(ids)
}

/// "HTTP 429 Too Many Requests: queue full", from a status and an error body.
fn status_error(status: reqwest::StatusCode, body: &str) -> String {
    let msg = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| error_message(&v))
        .unwrap_or_else(|| quote(body.trim()));
    if msg.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {msg}")
    }
}

/// The JSON body of one request.
fn body(cfg: &ClientConfig, r: &HttpRequest) -> Value {
    let prompt = match &r.prompt {
        Prompt::Text(t) => json!(t),
        Prompt::Tokens(ids) => json!(ids),
    };
    let mut b = json!({
        "model": cfg.model,
        "prompt": prompt,
        "max_tokens": r.max_tokens,
        "temperature": cfg.sampling.temperature,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if let Some(o) = b.as_object_mut() {
        if let Some(ie) = r.ignore_eos {
            o.insert("ignore_eos".into(), json!(ie));
        }
        if cfg.sampling.top_p < 1.0 {
            o.insert("top_p".into(), json!(cfg.sampling.top_p));
        }
        if cfg.sampling.top_k > 0 {
            o.insert("top_k".into(), json!(cfg.sampling.top_k));
        }
    }
    b
}

/// Sends one request and reads its stream into `rec`; an `Err` is the request's failure.
async fn stream_one(
    http: &reqwest::Client,
    url: &Url,
    body: &Value,
    start: Instant,
    rec: &mut RequestRecord,
) -> Result<(), String> {
    let since = |i: Instant| i.duration_since(start).as_secs_f64();
    let resp = http
        .post(url.clone())
        .json(body)
        .send()
        .await
        .map_err(|e| format!("request failed: {}", chain(&e)))?;
    let status = resp.status();
    if !status.is_success() {
        // The error body is small; a broken one still leaves the status to report.
        let text = resp.text().await.unwrap_or_default();
        return Err(status_error(status, &text));
    }
    let mut state = StreamState::default();
    let mut sse = SseReader::new();
    let mut events = Vec::new();
    let mut bytes = resp.bytes_stream();
    while let Some(piece) = bytes.next().await {
        let piece = piece.map_err(|e| {
            format!(
                "stream broken after {} chunks: {}",
                state.chunks.len(),
                chain(&e)
            )
        })?;
        // Every event in one network read arrived at the same moment.
        let t = since(Instant::now());
        sse.feed(&piece, &mut events).map_err(|e| e.to_string())?;
        for data in events.drain(..) {
            state.on_event(&data, t)?;
        }
    }
    sse.finish(&mut events).map_err(|e| e.to_string())?;
    let t = since(Instant::now());
    for data in events.drain(..) {
        state.on_event(&data, t)?;
    }
    rec.chunks = state.chunks;
    rec.output_tokens = state.output_tokens;
    rec.end_s = rec.chunks.last().map(|c| c.t_s);
    if !state.done {
        return Err(format!(
            "stream ended before `data: [DONE]` after {} chunks",
            rec.chunks.len()
        ));
    }
    if rec.chunks.is_empty() {
        return Err("no event with text: nothing to time the first token by".into());
    }
    Ok(())
}

/// Sends `requests[i]` at `send_times[i]` seconds from the start and records each; calls
/// `on_done(i, record)` as request `i` finishes (in finishing order).
///
/// # Errors
/// [`HttpBenchError`] when the run cannot start (mismatched lengths, a bad send time, a zero
/// concurrency cap). Failed requests are not errors: they carry [`RequestRecord::error`].
pub async fn run(
    cfg: &ClientConfig,
    requests: &[HttpRequest],
    send_times: &[f64],
    mut on_done: impl FnMut(usize, &RequestRecord),
) -> Result<HttpRun, HttpBenchError> {
    if requests.len() != send_times.len() {
        return Err(HttpBenchError::LengthMismatch {
            requests: requests.len(),
            times: send_times.len(),
        });
    }
    if let Some(&t) = send_times.iter().find(|t| !(0.0..=MAX_SEND_S).contains(*t)) {
        return Err(HttpBenchError::BadSendTime(t));
    }
    let slots = match cfg.max_concurrency {
        Some(0) => return Err(HttpBenchError::ZeroConcurrency),
        Some(n) => n,
        None => Semaphore::MAX_PERMITS,
    };
    let sem = Semaphore::new(slots.min(Semaphore::MAX_PERMITS));
    let http = client()?;
    let url = endpoint(&cfg.api, "completions");
    let start = Instant::now();
    let (http, url, sem) = (&http, &url, &sem);
    let mut pending: FuturesUnordered<_> = requests
        .iter()
        .zip(send_times)
        .enumerate()
        .map(|(i, (r, &t))| async move {
            tokio::time::sleep_until(start + Duration::from_secs_f64(t)).await;
            // The semaphore is never closed, so `acquire` cannot fail; `ok()` keeps it so.
            let _permit = sem.acquire().await.ok();
            let sent = Instant::now();
            let mut rec = RequestRecord {
                send_s: sent.duration_since(start).as_secs_f64(),
                prompt_tokens: r.prompt_tokens,
                ..RequestRecord::default()
            };
            let body = body(cfg, r);
            let res = match cfg.request_timeout {
                Some(limit) => {
                    tokio::time::timeout(limit, stream_one(http, url, &body, start, &mut rec))
                        .await
                        .unwrap_or_else(|_| {
                            Err(format!("timed out after {:.1} s", limit.as_secs_f64()))
                        })
                }
                None => stream_one(http, url, &body, start, &mut rec).await,
            };
            rec.error = res.err();
            (i, rec)
        })
        .collect();
    let mut records = vec![RequestRecord::default(); requests.len()];
    while let Some((i, rec)) = pending.next().await {
        on_done(i, &rec);
        records[i] = rec;
    }
    Ok(HttpRun {
        records,
        duration_s: start.elapsed().as_secs_f64(),
    })
}

/// [`run`] on a Tokio runtime of its own, for synchronous callers such as the CLI.
///
/// # Errors
/// As [`run`], and [`HttpBenchError::Client`] if the runtime cannot be built.
pub fn run_blocking(
    cfg: &ClientConfig,
    requests: &[HttpRequest],
    send_times: &[f64],
    on_done: impl FnMut(usize, &RequestRecord),
) -> Result<HttpRun, HttpBenchError> {
    runtime()?.block_on(run(cfg, requests, send_times, on_done))
}

/// [`served_models`] on a Tokio runtime of its own.
///
/// # Errors
/// As [`served_models`].
pub fn served_models_blocking(api: &Url, timeout: Duration) -> Result<Vec<ServedModel>, HttpBenchError> {
    runtime()?.block_on(served_models(api, timeout))
}

/// One thread is plenty: the client only waits on sockets and parses small JSON events, and
/// it leaves the cores to a server on the same machine.
fn runtime() -> Result<tokio::runtime::Runtime, HttpBenchError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| HttpBenchError::Client(format!("tokio runtime: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let root = |s: &str| parse_base_url(s).map(|u| u.to_string());
        assert_eq!(
            root("http://127.0.0.1:8000").unwrap(),
            "http://127.0.0.1:8000/v1"
        );
        assert_eq!(
            root("http://localhost:8000/").unwrap(),
            "http://localhost:8000/v1"
        );
        assert_eq!(root("http://[::1]:9/v1/").unwrap(), "http://[::1]:9/v1");
        assert_eq!(
            root("http://h/api/v1/completions").unwrap(),
            "http://h/api/v1"
        );
        assert_eq!(root("HTTP://h:1/x").unwrap(), "http://h:1/x/v1");
        let u = parse_base_url("http://h:1/v1").unwrap();
        assert_eq!(
            endpoint(&u, "completions").as_str(),
            "http://h:1/v1/completions"
        );
        for (bad, why) in [
            ("https://h:1", "no TLS"),
            ("127.0.0.1:8000", "must start with http://"),
            ("ftp://h", "must start with http://"),
            ("http://", "empty host"),
            ("http://u:p@h:1", "credentials"),
            ("http://h:1/?a=1", "query"),
            ("http://h:99999", "invalid port"),
        ] {
            let e = parse_base_url(bad).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn request_body_is_a_streaming_completion() {
        let cfg = ClientConfig {
            api: parse_base_url("http://h:1").unwrap(),
            model: "m".into(),
            max_concurrency: None,
            request_timeout: None,
            sampling: RequestSampling::default(),
        };
        let r = HttpRequest {
            prompt: Prompt::Tokens(vec![1, 2]),
            prompt_tokens: 2,
            max_tokens: 7,
            ignore_eos: Some(true),
        };
        let b = body(&cfg, &r);
        assert_eq!(b["prompt"], json!([1, 2]));
        assert_eq!(
            (b["max_tokens"].as_u64(), b["stream"].as_bool()),
            (Some(7), Some(true))
        );
        assert_eq!(b["stream_options"]["include_usage"], json!(true));
        assert_eq!(
            (b["ignore_eos"].as_bool(), b["model"].as_str()),
            (Some(true), Some("m"))
        );
        let b = body(
            &cfg,
            &HttpRequest {
                ignore_eos: None,
                ..r
            },
        );
        assert!(b.get("ignore_eos").is_none());
    }
}
