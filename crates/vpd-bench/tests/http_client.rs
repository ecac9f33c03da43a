//! The HTTP load client against a mock OpenAI server on 127.0.0.1 (axum, an ephemeral port):
//! known chunk counts and delays are timed right, per-chunk usage gives tokens per chunk,
//! and every kind of failure (429, malformed data, non-UTF-8, a dropped connection, a stream
//! without `[DONE]` or without text, a refused connection, a timeout) is a recorded error,
//! never a panic. The prompt text tells the mock what to do.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use vpd_bench::http::{self, ClientConfig, HttpRequest, Prompt};
use vpd_bench::metrics::{summarize, RequestRecord};

const MODEL: &str = "mock-model";

#[derive(Default)]
struct Mock {
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// Counts a response as in flight until its body is dropped (sent or abandoned).
struct InFlight(Arc<Mock>);

impl InFlight {
    fn new(m: &Arc<Mock>) -> Self {
        let now = m.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        m.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(Arc::clone(m))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One piece of the body: wait `ms`, then send `bytes`, or break the connection (`None`).
type Step = (u64, Option<Vec<u8>>);

fn sse(v: &Value) -> Option<Vec<u8>> {
    Some(format!("data: {v}\n\n").into_bytes())
}

fn text(t: &str) -> Value {
    json!({"object": "text_completion", "choices": [{"index": 0, "text": t, "finish_reason": null}]})
}

fn usage(n: u64) -> Value {
    json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": n, "total_tokens": n + 3}})
}

fn done() -> Option<Vec<u8>> {
    Some(b"data: [DONE]\n\n".to_vec())
}

fn streamed(m: &Arc<Mock>, steps: Vec<Step>) -> Response {
    let guard = InFlight::new(m);
    let body = futures_util::stream::unfold((steps.into_iter(), guard), |(mut it, g)| async move {
        let (ms, bytes) = it.next()?;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        let item = bytes
            .map(Bytes::from)
            .ok_or_else(|| std::io::Error::other("mock drops the connection"));
        Some((item, (it, g)))
    });
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(body),
    )
        .into_response()
}

fn error(status: StatusCode, msg: &str) -> Response {
    (
        status,
        Json(json!({"error": {"message": msg, "type": "mock", "code": status.as_u16()}})),
    )
        .into_response()
}

async fn completions(State(m): State<Arc<Mock>>, Json(b): Json<Value>) -> Response {
    // What every benchmark request must carry.
    if b["model"] != MODEL {
        return error(
            StatusCode::NOT_FOUND,
            &format!("model `{}` does not exist", b["model"]),
        );
    }
    if b["stream"] != true
        || b["stream_options"]["include_usage"] != true
        || !b["max_tokens"].is_u64()
    {
        return error(
            StatusCode::BAD_REQUEST,
            "want stream, include_usage and max_tokens",
        );
    }
    let prompt = match &b["prompt"] {
        Value::String(s) => s.clone(),
        Value::Array(ids) if ids.iter().all(Value::is_u64) => format!("ok {} 0", ids.len()),
        _ => return error(StatusCode::BAD_REQUEST, "prompt"),
    };
    let words: Vec<&str> = prompt.split(' ').collect();
    let num = |i: usize| {
        words
            .get(i)
            .and_then(|w| w.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let (n, ms) = (num(1), num(2));
    let steps: Vec<Step> = match words[0] {
        // n one-token chunks, each `ms` after the one before, then the usage event.
        "ok" => (0..n)
            .map(|i| (ms, sse(&text(&format!("w{i} ")))))
            .chain([(0, sse(&usage(n))), (0, done())])
            .collect(),
        // Speculative style: 2 tokens per chunk, usage on every event.
        "spec" => (1..=n)
            .map(|i| {
                let mut v = text("ab");
                v["usage"] = json!({"completion_tokens": 2 * i});
                (ms, sse(&v))
            })
            .chain([(0, sse(&usage(2 * n))), (0, done())])
            .collect(),
        "busy" => return error(StatusCode::TOO_MANY_REQUESTS, "waiting queue is full"),
        "garbage" => vec![
            (0, sse(&text("x"))),
            (0, Some(b"data: {not json\n\n".to_vec())),
            (0, done()),
        ],
        "binary" => vec![(0, Some(b"data: \xff\xfe\n\n".to_vec())), (0, done())],
        "cut" => vec![(0, sse(&text("x"))), (20, sse(&text("y"))), (20, None)],
        "nodone" => vec![(0, sse(&text("x"))), (0, sse(&usage(1)))],
        "notext" => vec![(0, sse(&usage(0))), (0, done())],
        _ => return error(StatusCode::BAD_REQUEST, "unknown mock prompt"),
    };
    streamed(&m, steps)
}

async fn models() -> Json<Value> {
    Json(json!({"object": "list", "data": [{"id": MODEL, "object": "model", "max_model_len": 4096}, {"id": "other"}]}))
}

/// Serves the mock on 127.0.0.1 from the current runtime; returns its base URL.
async fn start(m: &Arc<Mock>) -> String {
    let app = Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .with_state(Arc::clone(m));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn cfg(url: &str, max_concurrency: Option<usize>) -> ClientConfig {
    ClientConfig {
        api: http::parse_base_url(url).unwrap(),
        model: MODEL.into(),
        max_concurrency,
        request_timeout: Some(Duration::from_secs(5)),
        sampling: http::RequestSampling::default(),
    }
}

fn req(prompt: &str) -> HttpRequest {
    HttpRequest {
        prompt: Prompt::Text(prompt.into()),
        prompt_tokens: 3,
        max_tokens: 16,
        ignore_eos: Some(true),
    }
}

fn err(r: &RequestRecord) -> &str {
    r.error.as_deref().unwrap_or("")
}

#[tokio::test]
async fn timing_tokens_and_every_failure_are_recorded() {
    let m = Arc::new(Mock::default());
    let url = start(&m).await;
    let prompts = [
        "ok 4 30",
        "spec 3 10",
        "busy",
        "garbage",
        "binary",
        "cut",
        "nodone",
        "notext",
        "ok 1 0",
    ];
    let mut reqs: Vec<HttpRequest> = prompts.iter().map(|p| req(p)).collect();
    reqs.push(HttpRequest {
        prompt: Prompt::Tokens(vec![5, 6]),
        ..req("")
    });
    let mut times = vec![0.0; reqs.len()];
    times[8] = 0.1;
    let mut finished = Vec::new();
    let run = http::run(&cfg(&url, None), &reqs, &times, |i, _| finished.push(i))
        .await
        .unwrap();
    finished.sort_unstable();
    assert_eq!(
        finished,
        (0..reqs.len()).collect::<Vec<_>>(),
        "one callback per request"
    );
    let r = &run.records;

    // 4 chunks, each ≥ 30 ms after the one before: TTFT ≥ 30 ms, E2E ≥ 120 ms.
    assert_eq!(r[0].error, None);
    assert_eq!(r[0].chunks.len(), 4);
    assert!(r[0].chunks.iter().all(|c| c.tokens == 1));
    assert_eq!(r[0].output_tokens, Some(4));
    let ttft = r[0].ttft_s().unwrap();
    assert!((0.03..2.0).contains(&ttft), "TTFT {ttft}");
    assert!(r[0].e2e_s() >= 0.12, "E2E {}", r[0].e2e_s());
    assert!(r[0].chunks.windows(2).all(|w| w[1].t_s >= w[0].t_s));

    assert_eq!(r[1].error, None);
    assert_eq!(
        r[1].chunks.iter().map(|c| c.tokens).collect::<Vec<_>>(),
        [2, 2, 2]
    );
    assert_eq!(r[1].output_tokens, Some(6));

    assert!(
        err(&r[2]).contains("429") && err(&r[2]).contains("waiting queue is full"),
        "{}",
        err(&r[2])
    );
    assert!(r[2].chunks.is_empty());
    assert!(
        err(&r[3]).contains("malformed event data"),
        "{}",
        err(&r[3])
    );
    assert!(err(&r[4]).contains("UTF-8"), "{}", err(&r[4]));
    assert!(err(&r[5]).contains("stream broken"), "{}", err(&r[5]));
    assert!(err(&r[6]).contains("[DONE]"), "{}", err(&r[6]));
    assert!(err(&r[7]).contains("no event with text"), "{}", err(&r[7]));

    assert_eq!(r[8].error, None);
    assert!(
        r[8].send_s >= 0.1,
        "sent at {} before its time",
        r[8].send_s
    );
    assert_eq!((r[8].chunks.len(), r[8].output_tokens), (1, Some(1)));
    assert_eq!(r[9].error, None, "token-id prompt");
    assert_eq!(r[9].output_tokens, Some(2));

    let s = summarize(&run.records, run.duration_s, None).unwrap();
    assert_eq!((s.completed, s.failed), (4, 6));
    assert_eq!(s.total_output_tokens, 4 + 6 + 1 + 2);
    assert_eq!(s.itl_ms.count, 3 + 2 + 1, "ITLs of the completed requests");
    // TPOT of request 0: (E2E − TTFT) / 3 ≥ 30 ms.
    assert!(s.tpot_ms.count == 3 && r[0].tpot_s().unwrap() >= 0.03);
    assert!(run.duration_s >= r[0].e2e_s());
    assert_eq!(m.in_flight.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn concurrency_cap_is_held_and_send_time_is_when_it_went_out() {
    let m = Arc::new(Mock::default());
    let url = start(&m).await;
    let reqs: Vec<HttpRequest> = (0..4).map(|_| req("ok 2 40")).collect();
    let run = http::run(&cfg(&url, Some(2)), &reqs, &[0.0; 4], |_, _| {})
        .await
        .unwrap();
    assert!(run.records.iter().all(|r| r.error.is_none()));
    assert_eq!(m.max_in_flight.load(Ordering::SeqCst), 2);
    let mut sends: Vec<f64> = run.records.iter().map(|r| r.send_s).collect();
    sends.sort_by(f64::total_cmp);
    // The last two waited for the first two (≥ 80 ms each) to finish.
    assert!(sends[2] >= 0.08, "{sends:?}");
    let e = http::run(&cfg(&url, Some(0)), &reqs, &[0.0; 4], |_, _| {})
        .await
        .unwrap_err();
    assert!(e.to_string().contains("max_concurrency"));
    let e = http::run(&cfg(&url, None), &reqs, &[0.0; 3], |_, _| {})
        .await
        .unwrap_err();
    assert!(e.to_string().contains("4 requests but 3 send times"));
    for bad in [f64::NAN, -1.0, f64::INFINITY, 1e300] {
        let e = http::run(&cfg(&url, None), &reqs[..1], &[bad], |_, _| {})
            .await
            .unwrap_err();
        assert!(e.to_string().contains("send time"), "{bad}: {e}");
    }
}

#[tokio::test]
async fn wrong_model_refused_connection_and_timeout_are_errors() {
    let m = Arc::new(Mock::default());
    let url = start(&m).await;
    let wrong = ClientConfig {
        model: "other".into(),
        ..cfg(&url, None)
    };
    let run = http::run(&wrong, &[req("ok 1 0")], &[0.0], |_, _| {})
        .await
        .unwrap();
    let e = err(&run.records[0]);
    assert!(e.contains("404") && e.contains("does not exist"), "{e}");

    let slow = ClientConfig {
        request_timeout: Some(Duration::from_millis(100)),
        ..cfg(&url, None)
    };
    let run = http::run(&slow, &[req("ok 3 300")], &[0.0], |_, _| {})
        .await
        .unwrap();
    assert!(
        err(&run.records[0]).contains("timed out"),
        "{}",
        err(&run.records[0])
    );

    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let run = http::run(
        &cfg(&format!("http://127.0.0.1:{port}"), None),
        &[req("ok 1 0")],
        &[0.0],
        |_, _| {},
    )
    .await
    .unwrap();
    assert!(
        err(&run.records[0]).starts_with("request failed"),
        "{}",
        err(&run.records[0])
    );
}

/// The synchronous entry points the CLI uses, with the mock on a thread of its own.
#[test]
fn blocking_run_and_model_list() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            tx.send(start(&Arc::new(Mock::default())).await).unwrap();
            std::future::pending::<()>().await;
        });
    });
    let url = rx.recv().unwrap();
    let api = http::parse_base_url(&url).unwrap();
    let listed = http::served_models_blocking(&api, Duration::from_secs(5)).unwrap();
    let want = [
        http::ServedModel { id: MODEL.into(), max_model_len: Some(4096) },
        http::ServedModel { id: "other".into(), max_model_len: None },
    ];
    assert_eq!(listed, want);
    let run = http::run_blocking(&cfg(&url, None), &[req("ok 2 0")], &[0.0], |_, _| {}).unwrap();
    assert_eq!(run.records[0].output_tokens, Some(2));
    let mut missing = api.clone();
    missing.set_path("/nothing/v1");
    let e = http::served_models_blocking(&missing, Duration::from_secs(5)).unwrap_err();
    assert!(e.to_string().contains("404"), "{e}");
}
